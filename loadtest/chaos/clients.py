"""Readers and clappers that know every gateway, and move to another when theirs goes away.

They speak the public contract (docs/PROTOCOL.md) like a browser would: a reader keeps the
highest (epoch, seq) per article and rejoins its rooms after a reconnect; a clapper retries a
batch with the same id after a lost answer or an ``unavailable`` error. Everything a clapper
sent is recorded in the shared :class:`ClapBook` with its outcome, which is what the checker
judges the service by.

Every loop is bounded: reconnects back off up to ``MAX_BACKOFF_S`` and stop at the deadline;
a batch is tried at most ``MAX_ATTEMPTS`` times; a clapper has at most ``MAX_INFLIGHT``
batches unanswered.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from loadtest.chaos.verdict import ACKED, ClapRecord

log = logging.getLogger("chaos.clients")

MAX_ATTEMPTS = 4
MAX_INFLIGHT = 8  # the gateway's own in-flight limit per connection
MAX_BACKOFF_S = 2.0
CONNECT_TIMEOUT_S = 5.0


@dataclass
class Gaps:
    """The longest stretch without an event since a mark: how long a fault stopped something.

    Counted from the mark itself, so a fault whose outage begins a little after it strikes (a
    graceful stop) is measured whole. ``longest(now)`` is None until the first event came.
    """

    mark: float
    last: float
    widest: float = 0.0
    seen: bool = False

    @classmethod
    def starting(cls, at: float) -> Gaps:
        return cls(at, at)

    def event(self, at: float) -> None:
        self.widest = max(self.widest, at - self.last)
        self.last = at
        self.seen = True

    def longest(self, now: float) -> float | None:
        return max(self.widest, now - self.last) if self.seen else None


class ClapBook:
    """Every clap batch sent, by id, and what the load is doing now (set by the suite)."""

    def __init__(self) -> None:
        self.claps: dict[str, ClapRecord] = {}
        self.phase = ""
        self.articles: tuple[str, ...] = ()
        self.clapping = False

    def of_phase(self, phase: str) -> list[ClapRecord]:
        return [c for c in self.claps.values() if c.phase == phase]


async def until_first_ends(*coroutines) -> None:
    """Run the coroutines until one ends (a closed socket ends them all); re-raise its error."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()


@dataclass
class Connection:
    """One websocket of a client, with the index of the gateway it reached."""

    ws: ClientConnection
    gateway: int
    number: int  # 0 for the first connection of a client, +1 per reconnect


async def connect_any(urls: list[str], start: int, deadline: float, stop: asyncio.Event) -> tuple[ClientConnection, int] | None:
    """Connect to ``urls[start]``, else the next, round and round, backing off; None at the deadline."""
    backoff = 0.1
    for attempt in itertools.count():
        if stop.is_set() or time.monotonic() >= deadline:
            return None
        index = (start + attempt) % len(urls)
        try:
            ws = await connect(urls[index], open_timeout=CONNECT_TIMEOUT_S, max_queue=None, close_timeout=1,
                               ping_interval=None)
            return ws, index
        except (OSError, WebSocketException, TimeoutError) as error:
            log.debug("connect %s failed: %r", urls[index], error)
        if attempt % len(urls) == len(urls) - 1:  # every gateway refused: wait before the next round
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
    return None


@dataclass
class ReaderArticle:
    """What one reader holds for one article."""

    position: tuple[int, int] | None = None
    total: int | None = None
    connection_position: tuple[int, int] | None = None  # highest delivered on the current connection
    updates_since_mark: Gaps | None = None  # the first counts only if it includes a clap made after the mark


@dataclass
class ReaderStats:
    reconnects: int = 0
    updates: int = 0
    regressions: int = 0  # a lower position than already delivered on the same connection, same epoch
    drops: int = 0  # a higher position with a lower total, same epoch
    stale_snapshots: int = 0  # after a reconnect, a first total below what the reader held (ignored)
    fresh_mark_ms: int | None = None
    reconnects_since_mark: int = 0


class FailoverReader:
    """A reader of the load's current articles, on its preferred gateway while it lives."""

    def __init__(self, name: str, urls: list[str], preferred: int, book: ClapBook) -> None:
        self.name = name
        self.urls = urls
        self.preferred = preferred
        self.book = book
        self.articles: dict[str, ReaderArticle] = {}
        self.stats = ReaderStats()
        self.connection: Connection | None = None
        self.joined: set[str] = set()

    def mark(self, now: float) -> None:
        """Start measuring: the next total whose newest clap reached a gateway after ``now``."""
        self.stats.fresh_mark_ms = int(now * 1000)
        for held in self.articles.values():
            held.updates_since_mark = Gaps.starting(now)
        self.stats.reconnects_since_mark = 0

    def update_gaps(self, articles: list[str], now: float) -> list[float | None]:
        """Per article: the longest stretch since the mark without a new total (None: none came)."""
        gaps = [self.articles[a].updates_since_mark if a in self.articles else None for a in articles]
        return [g.longest(now) if g is not None else None for g in gaps]

    def totals(self) -> dict[str, int | None]:
        return {article: held.total for article, held in self.articles.items()}

    async def run(self, deadline: float, stop: asyncio.Event) -> None:
        start = self.preferred
        number = 0
        while not stop.is_set() and time.monotonic() < deadline:
            got = await connect_any(self.urls, start, deadline, stop)
            if got is None:
                return
            ws, index = got
            if number:
                self.stats.reconnects += 1
                self.stats.reconnects_since_mark += 1
            self.connection = Connection(ws, index, number)
            number += 1
            for held in self.articles.values():
                held.connection_position = None
            self.joined = set()
            try:
                await until_first_ends(self._follow_rooms(ws, stop), self._receive(ws))
            except ConnectionClosed:
                pass
            finally:
                self.connection = None
                await ws.close()
            # The gateway went away (or said 1012): the next one in the list, at once.
            start = (index + 1) % len(self.urls)

    async def _follow_rooms(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        """Keep this connection joined to exactly the book's current articles."""
        while not stop.is_set():
            wanted = set(self.book.articles)
            for article in sorted(self.joined - wanted):
                await ws.send(orjson.dumps({"type": "leave", "article": article}).decode())
                self.joined.discard(article)
                self.articles.pop(article, None)
            for article in sorted(wanted - self.joined):
                self.articles.setdefault(article, ReaderArticle())
                await ws.send(orjson.dumps({"type": "join", "article": article}).decode())
                self.joined.add(article)
            await asyncio.sleep(0.2)
        await ws.close()

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            doc = orjson.loads(raw)
            if doc.get("type") == "count":
                self._on_count(doc)

    def _on_count(self, doc: dict) -> None:
        held = self.articles.get(doc["article"])
        if held is None:
            return  # a room just left
        position, total = (int(doc["epoch"]), int(doc["seq"])), int(doc["total"])
        before = held.connection_position
        regression = before is not None and position[0] == before[0] and position < before
        if regression:
            self.stats.regressions += 1
        held.connection_position = position if before is None else max(position, before)
        if held.position is not None and position <= held.position:
            if position < held.position and not regression:
                self.stats.stale_snapshots += 1  # a rejoin's snapshot older than what we hold
            return  # the client rule: never apply a position at or below the one held
        if held.position is not None and position[0] == held.position[0] and held.total is not None \
                and total < held.total:
            self.stats.drops += 1
        held.position, held.total = position, total
        self.stats.updates += 1
        gaps = held.updates_since_mark
        if gaps is not None and (gaps.seen or int(doc.get("at", 0)) >= self.stats.fresh_mark_ms):
            gaps.event(time.time())


@dataclass
class ClapperStats:
    reconnects: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    acks_since_mark: Gaps | None = None  # acks of batches sent after the mark
    reconnects_since_mark: int = 0


class FailoverClapper:
    """One user clapping the load's current articles at a fixed rate, recording every outcome."""

    def __init__(
        self, name: str, urls: list[str], preferred: int, token: str, user: str, book: ClapBook, *,
        rate: float, choose: Callable[[tuple[str, ...], random.Random, int], tuple[str, int]], seed: int,
    ) -> None:
        self.name = name
        self.urls = urls
        self.preferred = preferred
        self.token = token
        self.user = user
        self.book = book
        self.period = 1.0 / rate
        self.choose = choose
        self.random = random.Random(seed)
        self.stats = ClapperStats()
        self.inflight: dict[str, ClapRecord] = {}
        self.retry: deque[ClapRecord] = deque()
        self.ids = itertools.count(seed)  # clappers start on different articles

    def mark(self, now: float) -> None:
        self.stats.acks_since_mark = Gaps.starting(now)
        self.stats.reconnects_since_mark = 0

    @property
    def settled(self) -> bool:
        return not self.inflight and not self.retry

    async def run(self, deadline: float, stop: asyncio.Event) -> None:
        start = self.preferred
        number = 0
        while not stop.is_set() and time.monotonic() < deadline:
            urls = [f"{url}?token={self.token}" for url in self.urls]
            got = await connect_any(urls, start, deadline, stop)
            if got is None:
                break
            ws, index = got
            if number:
                self.stats.reconnects += 1
                self.stats.reconnects_since_mark += 1
            number += 1
            try:
                await until_first_ends(self._send_loop(ws, stop, deadline), self._receive(ws))
            except ConnectionClosed:
                pass
            finally:
                await ws.close()
                self._connection_lost()
            start = (index + 1) % len(self.urls)
        self._connection_lost()

    def _connection_lost(self) -> None:
        """Unanswered batches of a dead connection: sent again on the next one, same id."""
        for record in self.inflight.values():
            if record.attempts < MAX_ATTEMPTS:
                self.retry.append(record)
        self.inflight.clear()

    async def _send_loop(self, ws: ClientConnection, stop: asyncio.Event, deadline: float) -> None:
        next_at = time.monotonic()
        while not stop.is_set() and time.monotonic() < deadline:
            if len(self.inflight) < MAX_INFLIGHT:
                record = self._next_record()
                if record is not None:
                    record.attempts += 1
                    self.inflight[record.clap_id] = record
                    await ws.send(orjson.dumps(
                        {"type": "clap", "article": record.article, "count": record.count, "id": record.clap_id}).decode())
            next_at += self.period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await ws.close()

    def _next_record(self) -> ClapRecord | None:
        if self.retry:
            return self.retry.popleft()
        if not self.book.clapping or not self.book.articles:
            return None
        number = next(self.ids)
        article, count = self.choose(self.book.articles, self.random, number)
        clap_id = f"{self.name}-{number}"
        record = ClapRecord(clap_id, article, self.user, count, self.book.phase, time.time())
        self.book.claps[clap_id] = record
        return record

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            doc = orjson.loads(raw)
            kind, clap_id = doc.get("type"), doc.get("id")
            if kind == "ack":
                record = self.inflight.pop(clap_id, None) or self.book.claps.get(clap_id)
                if record is None:
                    continue
                record.outcome = ACKED
                record.acked_at = time.time()
                if doc.get("seq") is not None:
                    record.ack_seq = int(doc["seq"])
                gaps = self.stats.acks_since_mark
                if gaps is not None and record.sent_at >= gaps.mark:
                    gaps.event(record.acked_at)
            elif kind == "error" and clap_id is not None:
                code = str(doc.get("code"))
                self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
                record = self.inflight.pop(clap_id, None)
                if record is None or record.outcome == ACKED:
                    continue
                if code == "unavailable" and record.attempts < MAX_ATTEMPTS:
                    self.retry.append(record)  # the protocol: retry with the same id
                else:
                    record.outcome = f"refused:{code}"
