"""The fan-out baseline: a bare ``websockets`` server that broadcasts count frames to its readers.

It speaks the reader half of the gateway's contract (``join`` -> the current total at once,
then every change) with nothing behind it: no clap log, no processor, no rooms. Each tick it
builds the next count message, in the gateway's JSON layout with ``at`` = now, and hands it to
``websockets.broadcast``, which frames it per connection. What readers receive per second from
this server is the ceiling to compare the gateway's fan-out against on the same machine.

Run: ``python -m loadtest.baseline --port 8100``, then ``POST /broadcast?seconds=10&interval_ms=5``.
The tick schedule is by deadline: when a broadcast takes longer than the interval, the next one
starts at once, so a saturated server broadcasts as fast as it can.
"""
from __future__ import annotations

import argparse
import asyncio
import http
import signal
import time
from urllib.parse import parse_qs, urlsplit

import orjson
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


def json_response(status: int, doc: object) -> Response:
    body = orjson.dumps(doc)
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class BaselineServer:
    def __init__(self, max_lifetime_s: float) -> None:
        self.readers: set[ServerConnection] = set()
        self.article = ""
        self.total = 0
        self.seq = 0
        self.broadcasts = 0
        self.frames_written = 0
        self.max_lifetime_s = max_lifetime_s
        self._broadcaster: asyncio.Task[None] | None = None

    def message(self) -> str:
        doc = {"v": 1, "type": "count", "article": self.article, "total": self.total, "delta": 1,
               "seq": self.seq, "epoch": 1, "at": time.time_ns() // 1_000_000}
        return orjson.dumps(doc).decode()

    async def handle(self, connection: ServerConnection) -> None:
        try:
            async for raw in connection:
                doc = orjson.loads(raw)
                if doc.get("type") == "join":
                    self.article = self.article or doc["article"]
                    self.readers.add(connection)
                    await connection.send(self.message())
        except ConnectionClosed:
            pass
        finally:
            self.readers.discard(connection)

    async def route(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/healthz":
            return json_response(200, {"status": "ok", "connections": len(self.readers)})
        if parts.path == "/stats":
            return json_response(200, {"broadcasts": self.broadcasts, "frames_written": self.frames_written,
                                       "readers": len(self.readers)})
        if parts.path == "/broadcast":
            if self._broadcaster is not None and not self._broadcaster.done():
                return json_response(409, {"error": "busy"})
            seconds = float(query.get("seconds", "10"))
            interval = float(query.get("interval_ms", "5")) / 1000
            self._broadcaster = asyncio.create_task(self.broadcast_for(seconds, interval))
            return json_response(200, {"started": True, "readers": len(self.readers)})
        return None  # a websocket upgrade

    async def broadcast_for(self, seconds: float, interval: float) -> None:
        start = time.monotonic()
        next_tick = start
        while time.monotonic() - start < seconds:
            self.seq += 1
            self.total += 1
            readers = self.readers
            websockets.broadcast(readers, self.message())
            self.broadcasts += 1
            self.frames_written += len(readers)
            next_tick += interval
            # Yield to the loop every time (readers' joins and pings), even when behind schedule.
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick = max(next_tick, time.monotonic() - interval)

    async def serve(self, host: str, port: int) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with serve(self.handle, host, port, process_request=self.route, compression=None,
                         max_size=4096, max_queue=16, ping_interval=20, ping_timeout=20, close_timeout=2):
            print(f"baseline ready at http://{host}:{port}/", flush=True)
            try:
                await asyncio.wait_for(stop.wait(), self.max_lifetime_s)
            except TimeoutError:
                pass  # a forgotten baseline server stops by itself


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--max-lifetime", type=float, default=1800.0, help="seconds before it exits by itself")
    args = parser.parse_args()
    asyncio.run(BaselineServer(args.max_lifetime).serve(args.host, args.port))


if __name__ == "__main__":
    main()
