"""The gateway: websocket readers, claps into the log, totals out to the right rooms.

Rules live in ``core``; this module only moves bytes between sockets and the three ports.
"""
from __future__ import annotations

import asyncio
import html
import logging
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from core.identity import issue_token, verify_token
from core.messages import ClapRecorded, CountChanged
from core.ports import ClapLog, CounterStore, CountFeed
from core.ratelimit import TokenBucket
from core.validation import Clap, Join, Leave, Refused, is_valid_id, parse_client_message
from gateway import articles, pages
from gateway.config import GatewayConfig
from gateway.http import cookie, html_response, json_error, json_response, respond, split_path
from gateway.rooms import Reader, RoomRegistry

log = logging.getLogger("gateway")

TOKEN_COOKIE = "clap_token"
_CLAPS_PATH = re.compile(r"^/api/articles/([^/]+)/claps$")
_ARTICLE_PAGE = re.compile(r"^/articles/([^/]+)$")
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}


def zero_total(article: str) -> CountChanged:
    """What an article that nobody has clapped for looks like: below every real position."""
    return CountChanged(article, 0, 0, 0, 0, 0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge("gateway_connections", "Open websocket connections", registry=self.registry)
        self.rooms = Gauge("gateway_rooms", "Articles with at least one reader here", registry=self.registry)
        self.claps_acked = Counter("gateway_claps_acked", "Clap batches durably logged", registry=self.registry)
        self.claps_refused = Counter(
            "gateway_claps_refused", "Client messages refused", ["code"], registry=self.registry
        )
        self.updates_in = Counter("gateway_updates_received", "Totals received from the feed", registry=self.registry)
        self.frames_out = Gauge("gateway_frames_written", "Count frames written to readers", registry=self.registry)
        self.frames_conflated = Gauge(
            "gateway_frames_conflated", "Frames replaced by a newer one while a reader's socket was full", registry=self.registry
        )
        self.backlogged_readers = Gauge(
            "gateway_backlogged_readers", "Readers whose socket is full, holding at most one frame per room", registry=self.registry
        )
        self.refused_connections = Counter(
            "gateway_connections_refused", "Connections refused at capacity", registry=self.registry
        )
        self.room_pass = Histogram("gateway_room_pass_seconds", "One fan-out trip round a room above the chunk size",
                                   buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1, 2.5), registry=self.registry)
        self.room_rate = Gauge("gateway_room_updates_per_second", "Totals per second each reader of a room above "
                               "the chunk size gets", ["article"], registry=self.registry)


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        clap_log: ClapLog,
        store: CounterStore,
        feed: CountFeed,
        *,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.config = config
        self.clap_log = clap_log
        self.store = store
        self.feed = feed
        self.clock_ms = clock_ms
        self.rooms = RoomRegistry(write_buffer_high=config.write_buffer_high,
                                  on_pass=lambda room, seconds: self.metrics.room_pass.observe(seconds))
        self.metrics = Metrics()
        self.readers: set[Reader] = set()
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        updates = await self.feed.subscribe()
        self._tasks.append(asyncio.create_task(self._consume_feed(updates), name="feed"))
        self._tasks.append(asyncio.create_task(self.rooms.run_backlog_flusher(), name="backlog"))
        self._tasks.append(asyncio.create_task(self._keepalive(), name="keepalive"))
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._route,
            compression=None,  # frames are built once and shared; per-socket deflate would undo that
            max_size=4096,
            max_queue=16,
            ping_interval=None,  # one sweep pings everyone (_keepalive): no task per connection
            close_timeout=2,
        )
        log.info("gateway %s listening on http://%s:%d (%s mode)", self.config.name, self.config.host, self.port, self.config.mode)

    @property
    def background(self) -> list[asyncio.Task[None]]:
        """Tasks the gateway cannot live without: if one ends, the process should restart."""
        return list(self._tasks)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                # Close handshakes are bounded by close_timeout, but a stop must be bounded
                # whatever thousands of peers do.
                await asyncio.wait_for(self._server.wait_closed(), timeout=10)
            except TimeoutError:
                log.warning("connections still closing after 10 s; stopping anyway")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.config.keepalive_s)
            readers = list(self.readers)
            for start in range(0, len(readers), self.rooms.chunk):
                self.rooms.ping_all(readers[start : start + self.rooms.chunk])
                await asyncio.sleep(0)  # a sweep over 18,000 sockets must not stall the loop

    async def _consume_feed(self, updates: AsyncIterator[CountChanged]) -> None:
        async for update in updates:
            self.metrics.updates_in.inc()
            await self.rooms.publish(update)

    # -- HTTP --------------------------------------------------------------------------------

    async def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        path, query = split_path(request)
        method = request.method
        if path == "/ws":
            if len(self.readers) >= self.config.max_connections:
                self.metrics.refused_connections.inc()
                log.warning("refusing websocket: at capacity (%d connections)", len(self.readers))
                return json_error(503, "at_capacity", "this gateway holds its maximum of connections; retry another")
            return None
        if method == "POST" and path == "/api/session":
            user, token = self.new_identity()
            return json_response(200, {"user": user, "token": token}, [self._cookie_header(token)])
        if method != "GET":
            return json_error(405, "method_not_allowed", f"{method} is not supported on {path}")
        if path == "/api/articles":
            return json_response(200, [{"id": a.id, "title": a.title} for a in articles.SEEDED])
        if match := _CLAPS_PATH.match(path):
            article = match.group(1)
            if not is_valid_id(article):
                return json_error(400, "bad_request", "article must match [A-Za-z0-9_-]{1,64}")
            total = await self.read_total(article)
            return json_response(200, {"article": article, "total": total.total, "seq": total.seq, "epoch": total.epoch})
        if path in ("/healthz", "/readyz"):
            # /healthz: alive. /readyz: alive and able to take more readers, so a load balancer
            # stops sending new connections to a full gateway instead of having them refused.
            full = len(self.readers) >= self.config.max_connections
            broken = any(task.done() for task in self._tasks)  # e.g. the feed stopped
            status = 503 if broken or (path == "/readyz" and full) else 200
            return json_response(
                status,
                {"status": "broken" if broken else "full" if full else "ok", "gateway": self.config.name, "mode": self.config.mode,
                 "connections": len(self.readers), "rooms": len(self.rooms.rooms)},
            )
        if path == "/metrics":
            self.metrics.connections.set(len(self.readers))
            self.metrics.rooms.set(len(self.rooms.rooms))
            self.metrics.frames_out.set(self.rooms.frames_written)
            self.metrics.frames_conflated.set(self.rooms.frames_conflated)
            self.metrics.backlogged_readers.set(len(self.rooms._backlogged))
            self.metrics.room_rate.clear()
            for room in self.rooms.large_rooms():
                self.metrics.room_rate.labels(room.article).set(room.cadence.updates_per_second or 0.0)
            return respond(200, generate_latest(self.metrics.registry), "text/plain; version=0.0.4")
        if path == "/":
            return html_response(pages.index_page(articles.SEEDED))
        if match := _ARTICLE_PAGE.match(path):
            return await self._article_page(request, match.group(1))
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        return json_error(404, "not_found", f"nothing at {path}")

    async def _article_page(self, request: Request, article_id: str) -> Response:
        article = articles.BY_ID.get(article_id)
        if article is None:
            return json_error(404, "not_found", f"no article {article_id!r}")
        total = await self.read_total(article_id)
        headers = []
        if verify_token(self.config.secret, cookie(request, TOKEN_COOKIE)) is None:
            _, token = self.new_identity()
            headers.append(self._cookie_header(token))
        return html_response(pages.article_page(article, total), headers)

    def _static(self, name: str) -> Response:
        path = STATIC_DIR / name
        if "/" in name or path.suffix not in STATIC_TYPES or not path.is_file():
            return json_error(404, "not_found", f"no static file {html.escape(name)!r}")
        return respond(200, path.read_bytes(), STATIC_TYPES[path.suffix])

    def new_identity(self) -> tuple[str, str]:
        user = "u" + secrets.token_hex(8)
        return user, issue_token(self.config.secret, user)

    @staticmethod
    def _cookie_header(token: str) -> tuple[str, str]:
        return ("Set-Cookie", f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000")

    async def read_total(self, article: str) -> CountChanged:
        """The durable total, or the room's newer one if the store has not caught up yet."""
        stored = await self.store.read(article) or zero_total(article)
        room = self.rooms.rooms.get(article)
        if room is not None and room.latest is not None and room.latest.position() > stored.position():
            return room.latest
        return stored

    # -- websocket ---------------------------------------------------------------------------

    def _identify(self, request: Request) -> str | None:
        """The verified user of a websocket, from ?token= or the page's cookie (None: read-only)."""
        _, query = split_path(request)
        token = (query.get("token") or [None])[0] or cookie(request, TOKEN_COOKIE)
        return verify_token(self.config.secret, token)

    async def _handle(self, connection: ServerConnection) -> None:
        # Kept lean on purpose: this frame lives as long as the connection, and a gateway holds
        # its capacity in idle connections (see docs/BENCHMARKS.md, memory per connection).
        user = self._identify(connection.request)
        # An idle reader may stay for hours: do not keep the handshake's headers (3 KB of the
        # 15 KB an idle connection costs). websockets needs a request object, not its headers.
        connection.request = Request("/ws", Headers())
        connection.response = None
        reader = Reader(connection.transport)
        _tune_socket(connection.transport.get_extra_info("socket"), self.config.socket_send_buffer)
        # Most readers never clap: the clapping state is made on the first clap, which keeps an
        # idle connection small (capacity is counted in idle connections).
        bucket: TokenBucket | None = None
        inflight: asyncio.Semaphore | None = None
        self.readers.add(reader)
        try:
            while True:
                # recv() rather than `async for`: no async generator frame per idle connection.
                raw = await connection.recv()
                if isinstance(raw, bytes):
                    await self._send_error(connection, Refused("bad_request", "send JSON text frames, not binary"))
                    continue
                try:
                    message = parse_client_message(raw)
                    if isinstance(message, Join):
                        self._join(reader, message.article)
                    elif isinstance(message, Leave):
                        self.rooms.leave(reader, message.article)
                    elif isinstance(message, Clap):
                        if user is None:
                            raise Refused("unauthenticated", "clapping needs a session token", message.clap_id)
                        if bucket is None:
                            bucket = TokenBucket(self.config.claps_per_second, self.config.clap_burst, self.clock_ms())
                            inflight = asyncio.Semaphore(self.config.inflight_claps_per_connection)
                        if not bucket.take(self.clock_ms()):
                            raise Refused("rate_limited", "too many claps; slow down", message.clap_id)
                        await inflight.acquire()  # backpressure: stop reading this socket
                        asyncio.create_task(self._clap(connection, user, message, inflight))
                except Refused as refused:
                    await self._send_error(connection, refused)
        except ConnectionClosed:
            pass
        finally:
            self.readers.discard(reader)
            self.rooms.drop(reader)

    def _join(self, reader: Reader, article: str) -> None:
        if article not in reader.articles and len(reader.articles) >= self.config.max_rooms_per_connection:
            raise Refused("too_many_rooms", f"a connection may join at most {self.config.max_rooms_per_connection} articles")
        room = self.rooms.join(reader, article)
        if room.latest is None and article not in self._loading:
            # One store read per room, however many readers join at once.
            self._loading[article] = asyncio.create_task(self._load_room(article))

    async def _load_room(self, article: str) -> None:
        try:
            stored = await self.store.read(article)
        except Exception:
            log.exception("reading the total of %s failed", article)
            stored = None
        finally:
            self._loading.pop(article, None)
        await self.rooms.publish(stored or zero_total(article))

    async def _clap(self, connection: ServerConnection, user: str, clap: Clap, inflight: asyncio.Semaphore) -> None:
        event = ClapRecorded(clap.article, user, clap.count, clap.clap_id, self.clock_ms())
        try:
            await self.clap_log.append(event)
        except Exception as error:
            log.warning("clap %s not logged: %r", clap.clap_id, error)
            await self._send_error(connection, Refused("unavailable", "the clap was not recorded; retry with the same id", clap.clap_id))
            return
        finally:
            inflight.release()
        self.metrics.claps_acked.inc()
        try:
            await connection.send(orjson.dumps({"type": "ack", "id": clap.clap_id}).decode())
        except ConnectionClosed:
            pass

    async def _send_error(self, connection: ServerConnection, refused: Refused) -> None:
        self.metrics.claps_refused.labels(refused.code).inc()
        doc = {"type": "error", "code": refused.code, "message": refused.message}
        if refused.clap_id is not None:
            doc["id"] = refused.clap_id
        try:
            await connection.send(orjson.dumps(doc).decode())
        except ConnectionClosed:
            pass


def _tune_socket(sock: socket.socket | None, send_buffer: int) -> None:
    """Bound the kernel's send buffer (see ``GatewayConfig.socket_send_buffer``) and let the
    kernel find peers that vanished without a FIN, at no cost per connection here."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
