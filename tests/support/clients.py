"""Small websocket and HTTP clients speaking the public contract (docs/PROTOCOL.md)."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import orjson
import websockets


def http_json(url: str, method: str = "GET") -> object:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def http_get(url: str, timeout_s: float = 5) -> tuple[int, str]:
    """Status and body of a GET, an error status included (urllib raises on those)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def new_token(base_url: str) -> str:
    return http_json(f"{base_url}/api/session", "POST")["token"]


class Reader:
    """A websocket reader that keeps the newest total per article and checks the order."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.totals: dict[str, int] = {}
        self.positions: dict[str, tuple[int, int]] = {}
        self.counts_received = 0
        self.out_of_order = 0
        self.drops = 0  # a newer total below an older one: what a reader must never see
        self.acks: set[str] = set()
        self.ack_seqs: dict[str, int] = {}  # clap id -> the seq its ack carried
        self.mine: dict[str, int] = {}  # article -> "mine" of the newest join answer
        self.errors: list[dict] = []
        self.reading: dict[str, int] = {}  # article -> "reading now" of the newest presence message
        self.presence_messages: list[tuple[float, str, int]] = []  # (monotonic time, article, reading)
        self.counting: dict[str, str] = {}  # article -> the state of the newest counting message
        self.counting_messages: list[tuple[float, str, str]] = []  # (monotonic time, article, state)
        self._task = asyncio.create_task(self._receive())

    @classmethod
    async def open(cls, ws_url: str, token: str | None = None) -> Reader:
        url = f"{ws_url}?token={token}" if token else ws_url
        return cls(await websockets.connect(url, max_queue=None, open_timeout=20))

    @classmethod
    async def open_joined(cls, ws_url: str, article: str, count: int) -> list[Reader]:
        """``count`` readers of ``article``."""
        readers = [await cls.open(ws_url) for _ in range(count)]
        for reader in readers:
            await reader.join(article)
        return readers

    async def join(self, article: str) -> None:
        await self.ws.send(orjson.dumps({"type": "join", "article": article}).decode())

    async def clap(self, article: str, count: int, clap_id: str) -> None:
        await self.ws.send(orjson.dumps({"type": "clap", "article": article, "count": count, "id": clap_id}).decode())

    async def undo(self, article: str, undo_id: str) -> None:
        await self.ws.send(orjson.dumps({"type": "undo", "article": article, "id": undo_id}).decode())

    async def _receive(self) -> None:
        try:
            async for raw in self.ws:
                doc = orjson.loads(raw)
                if doc["type"] == "count":
                    if "mine" in doc:
                        self.mine[doc["article"]] = doc["mine"]
                    position = (doc["epoch"], doc["seq"])
                    seen = self.positions.get(doc["article"])
                    if seen is not None and position <= seen:
                        self.out_of_order += 1
                        continue
                    self.positions[doc["article"]] = position
                    if doc["total"] < self.totals.get(doc["article"], 0):
                        self.drops += 1
                    self.totals[doc["article"]] = doc["total"]
                    self.counts_received += 1
                elif doc["type"] == "presence":
                    self.reading[doc["article"]] = doc["reading"]
                    self.presence_messages.append((time.monotonic(), doc["article"], doc["reading"]))
                elif doc["type"] == "counting":
                    self.counting[doc["article"]] = doc["state"]
                    self.counting_messages.append((time.monotonic(), doc["article"], doc["state"]))
                elif doc["type"] == "ack":
                    self.acks.add(doc["id"])
                    self.ack_seqs[doc["id"]] = doc["seq"]
                else:
                    self.errors.append(doc)
        except websockets.ConnectionClosed:
            pass

    async def wait_for(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            await asyncio.sleep(0.02)
        return predicate(self)

    async def close(self) -> None:
        await self.ws.close()
        await self._task


async def wait_all(readers, predicate, timeout_s: float) -> bool:
    results = await asyncio.gather(*(r.wait_for(predicate, timeout_s) for r in readers))
    return all(results)
