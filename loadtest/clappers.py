"""Clappers: people tapping the clap button, with the client-side batching a real page does.

A clapper taps at its own rate (``click_rate`` ± 50%, scaled so that all of them together tap
exactly ``rate``), and every ``batch_ms`` sends what it tapped since as one ``clap`` message with
``count=k`` and a fresh id. The service caps a user at
50 claps per article, so a clapper gives an article 50 taps (some ``overclap_share`` of them
tap on past 50, to check the cap), moves to its next article, and after
``articles_per_session`` articles takes a new session (a new user). ``rate / click_rate``
clappers tap at once, so the offered rate is ``rate`` clap events per second. A clapper owes taps
by the clock from its first tap on, across articles and sessions: the time it spends opening its
next session is made up at the next send, not lost from the offered rate (up to
``MAKE_UP_S`` of it).

Every clap message is accounted for: acked (durably logged), refused (error code), or unknown
(no answer before the run ended). What the final totals must be follows from the acks:
``sum over users of min(50, claps acked)`` per article, and with the unknowns counted too as an
upper bound.

With ``one_per_message`` (``--clap-count 1``) every tap is sent at once as its own clap of
count 1: ``rate`` clap events per second, the hot article's benchmark load.

Every acked clap is also recorded with its send time, ack time and the ack's ``seq`` when the
server gives one: the per-clap latency (``loadtest.clap_latency``) is computed from these.

Clappers run in their own processes so that their websocket work does not share an event loop
with the orchestrator's sampling.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import math
import multiprocessing
import multiprocessing.connection
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from loadtest.articles import ArticleMix
from loadtest.httpclient import HttpError, request_json
from loadtest.plans import Target
from loadtest.stats import Histogram, bucket_of

USER_CAP = 50
# The longest stretch of missed taps a clapper makes up at once (a slow connect, a gateway that
# refused its session); longer outages lower the offered rate, as they would for real users. Half a
# second at 15 taps/s stays within the gateway's 8 claps in flight per connection.
MAKE_UP_S = 0.5


@dataclass(frozen=True)
class ClapPlan:
    targets: tuple[Target, ...]
    mix: ArticleMix
    rate: float  # clap events (taps) per second, all clappers together
    duration_s: float
    start_at: float = 0.0  # Unix time at which every clapper process starts tapping
    click_rate: float = 8.0  # taps per second of one clapper
    batch_ms: float = 250.0
    taps_per_article: int = USER_CAP
    overclap_share: float = 0.05
    overclap_taps: int = USER_CAP + 10
    articles_per_session: int = 1
    ack_timeout_s: float = 10.0
    # Keep each finished user's socket open until tapping ends, then close them all. A workaround
    # for a gateway bug: its keepalive sweep writes a ping to a socket whose close handshake is
    # under way (write() after write_eof() raises), the vital keepalive task ends, and the whole
    # gateway exits. With it, sockets close only in the last second of a run.
    close_at_end: bool = False
    processes: int = 1
    seed: int = 7
    one_per_message: bool = False  # every tap its own clap of count 1, sent at once

    @property
    def send_interval_s(self) -> float:
        """How often a clapper looks at its taps: each batch, or each tap's own moment."""
        return 1.0 / self.click_rate if self.one_per_message else self.batch_ms / 1000

    @property
    def clappers(self) -> int:
        return max(1, math.ceil(self.rate / self.click_rate)) if self.rate > 0 else 0

    def clappers_of(self, process: int) -> range:
        return range(process, self.clappers, self.processes)

    def clapper_rng(self, index: int) -> random.Random:
        return random.Random(self.seed * 7919 + index)

    @functools.cached_property
    def _jitters(self) -> tuple[float, ...]:
        # Each clapper's rng gives its jitter first (Clapper draws it again, keeping its sequence).
        return tuple(self.clapper_rng(i).uniform(0.5, 1.5) for i in range(self.clappers))

    def click_rate_of(self, index: int) -> float:
        """Clapper ``index``'s taps per second: ``click_rate`` ± 50%, the sum over clappers ``rate``."""
        jitters = self._jitters
        return self.rate * jitters[index] / sum(jitters)


@dataclass
class Ledger:
    """What the clappers of one process sent and what the gateway answered; merged across processes."""

    acked_capped: Counter[str] = field(default_factory=Counter)  # article -> sum over users of min(50, acked)
    upper_capped: Counter[str] = field(default_factory=Counter)  # the same counting unanswered claps as acked
    acked: Counter[str] = field(default_factory=Counter)
    tapped: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # error code -> claps refused
    messages: int = 0
    sessions: int = 0
    # Taps due by the clock that were not made up (a clapper late by more than MAKE_UP_S), and the
    # longest a clapper went between looks at its taps: why the offered rate fell short of the plan.
    taps_not_made_up: float = 0.0
    longest_gap_s: float = 0.0
    session_errors: Counter[str] = field(default_factory=Counter)
    taps_per_second: dict[int, int] = field(default_factory=dict)
    acks_per_second: dict[int, int] = field(default_factory=dict)  # claps acked, by ack time
    ack_latency: Histogram = field(default_factory=dict)
    # How long a new user waited for its identity (POST /api/session) and then its websocket.
    session_post_latency: Histogram = field(default_factory=dict)
    session_connect_latency: Histogram = field(default_factory=dict)
    # Every acked clap message: (article, sent, acked, the ack's seq or -1), Unix seconds.
    claps: list[tuple[str, float, float, int]] = field(default_factory=list)

    def merge(self, other: Ledger) -> None:
        for name in ("acked_capped", "upper_capped", "acked", "tapped", "unknown", "refused", "session_errors"):
            getattr(self, name).update(getattr(other, name))
        for name in ("taps_per_second", "acks_per_second", "ack_latency", "session_post_latency",
                     "session_connect_latency"):
            into = getattr(self, name)
            for key, value in getattr(other, name).items():
                into[key] = into.get(key, 0) + value
        self.messages += other.messages
        self.sessions += other.sessions
        self.taps_not_made_up += other.taps_not_made_up
        self.longest_gap_s = max(self.longest_gap_s, other.longest_gap_s)
        self.claps.extend(other.claps)

    def claps_for_readers(self, start: float, end: float) -> dict[str, object]:
        """What reader processes need to time every clap sent in [start, end) to every reader."""
        by_article: dict[str, list[tuple[float, float, int]]] = {}
        for article, sent, acked, seq in self.claps:
            if start <= sent < end:
                by_article.setdefault(article, []).append((sent, acked, seq))
        return {"window": (start, end), "by_article": by_article}


def bump(series: dict[int, int], key: int, by: int = 1) -> None:
    series[key] = series.get(key, 0) + by


@dataclass
class _Sent:
    article: str
    count: int
    at: float


class Session:
    """One user on one websocket: taps, batches, and the answers to its clap messages."""

    _ids = itertools.count()

    def __init__(self, ws: ClientConnection, ledger: Ledger, name: str) -> None:
        self.ws = ws
        self.ledger = ledger
        self.name = name
        self.pending: dict[str, _Sent] = {}
        self.acked: Counter[str] = Counter()
        self.settled = asyncio.Event()
        self.settled.set()
        self.receiver: asyncio.Task[None] | None = None

    async def receive(self) -> None:
        try:
            async for raw in self.ws:
                self._on_message(orjson.loads(raw))
        except ConnectionClosed:
            pass

    def _on_message(self, doc: dict[str, Any]) -> None:
        sent = self.pending.pop(doc.get("id", ""), None)
        if sent is None:
            return  # a count for an article we did not join, or an error about no clap
        now = time.time()
        if doc.get("type") == "ack":
            self.acked[sent.article] += sent.count
            self.ledger.acked[sent.article] += sent.count
            bump(self.ledger.acks_per_second, int(now), sent.count)
            bump(self.ledger.ack_latency, bucket_of((now - sent.at) * 1e6))
            seq = doc.get("seq")
            self.ledger.claps.append((sent.article, sent.at, now, seq if isinstance(seq, int) else -1))
        else:
            self.ledger.refused[doc.get("code", "error")] += sent.count
        if not self.pending:
            self.settled.set()

    async def clap(self, article: str, count: int) -> None:
        clap_id = f"{self.name}-{next(self._ids)}"
        now = time.time()
        self.pending[clap_id] = _Sent(article, count, now)
        self.settled.clear()
        self.ledger.messages += 1
        self.ledger.tapped[article] += count
        bump(self.ledger.taps_per_second, int(now), count)
        await self.ws.send(orjson.dumps({"type": "clap", "article": article, "count": count, "id": clap_id}).decode())

    def close_books(self) -> None:
        """Fold this user's claps into the per-article bounds, applying the 50 cap per user."""
        unknown: Counter[str] = Counter()
        for sent in self.pending.values():
            unknown[sent.article] += sent.count
        for article in set(self.acked) | set(unknown):
            self.ledger.acked_capped[article] += min(USER_CAP, self.acked[article])
            self.ledger.upper_capped[article] += min(USER_CAP, self.acked[article] + unknown[article])
            self.ledger.unknown[article] += unknown[article]


class Clapper:
    """One clapping slot: a sequence of users, each tapping on a few articles."""

    def __init__(self, plan: ClapPlan, index: int, ledger: Ledger, end_at: float) -> None:
        self.plan = plan
        self.index = index
        self.ledger = ledger
        self.end_at = end_at
        self.rng = plan.clapper_rng(index)
        self.rng.uniform(0.5, 1.5)  # the jitter in plan.click_rate_of(index)
        self.click_rate = plan.click_rate_of(index)
        self.sessions = 0
        self.owed = 0.0  # taps due by the clock and not sent yet
        self.owed_since = 0.0

    async def run(self) -> None:
        # Spread the first taps over one interval so the clappers do not send in lockstep.
        await asyncio.sleep(self.rng.uniform(0, self.plan.send_interval_s))
        self.owed_since = time.time()
        closing: set[asyncio.Task[None]] = set()
        while time.time() < self.end_at:
            target = self.plan.targets[(self.index + self.sessions) % len(self.plan.targets)]
            self.sessions += 1
            try:
                session = await self._open(target)
            except (OSError, HttpError, WebSocketException, TimeoutError) as error:
                self.ledger.session_errors[type(error).__name__] += 1
                await asyncio.sleep(0.5)  # do not hammer a gateway that refuses us
                continue
            try:
                for _ in range(self.plan.articles_per_session):
                    if time.time() >= self.end_at:
                        break
                    await self._tap_article(session, self.plan.mix.pick(self.rng))
            except ConnectionClosed as error:
                self.ledger.session_errors[type(error).__name__] += 1
            # The next user starts tapping while this one waits for its last acks, so waiting for
            # acks does not lower the offered rate.
            task = asyncio.create_task(self._settle(session))
            closing.add(task)
            task.add_done_callback(closing.discard)
        await asyncio.gather(*closing)

    async def _open(self, target: Target) -> Session:
        began = time.time()
        identity = await request_json("POST", f"{target.http_base}/api/session")
        posted = time.time()
        bump(self.ledger.session_post_latency, bucket_of((posted - began) * 1e6))
        url = f"ws://{target.host}:{target.port}{target.path}?token={identity['token']}"
        ws = await connect(url, compression=None, open_timeout=15, ping_interval=None, close_timeout=2)
        bump(self.ledger.session_connect_latency, bucket_of((time.time() - posted) * 1e6))
        self.ledger.sessions += 1
        session = Session(ws, self.ledger, f"c{self.index}s{self.sessions}")
        session.receiver = asyncio.create_task(session.receive())
        return session

    async def _settle(self, session: Session) -> None:
        """Wait (bounded) for the answers to this user's claps, then close the books and the socket."""
        try:
            await asyncio.wait_for(session.settled.wait(), self.plan.ack_timeout_s)
        except TimeoutError:
            pass
        session.close_books()
        if self.plan.close_at_end:
            await asyncio.sleep(max(0.0, self.end_at - time.time()))
        if session.receiver is not None:
            session.receiver.cancel()
        await session.ws.close()

    async def _tap_article(self, session: Session, article: str) -> None:
        overclap = self.rng.random() < self.plan.overclap_share
        taps_left = self.plan.overclap_taps if overclap else self.plan.taps_per_article
        interval = self.plan.send_interval_s
        most_owed = max(1.0, MAKE_UP_S * self.click_rate)
        while taps_left > 0:
            await asyncio.sleep(interval)
            now = time.time()
            if now >= self.end_at:
                return
            # Taps made since the last send, by the real elapsed time so a late timer loses none.
            due = self.owed + (now - self.owed_since) * self.click_rate
            self.ledger.longest_gap_s = max(self.ledger.longest_gap_s, now - self.owed_since)
            self.owed = min(most_owed, due)
            self.ledger.taps_not_made_up += due - self.owed
            self.owed_since = now
            count = min(int(self.owed), taps_left, 50)
            if count:
                self.owed -= count
                taps_left -= count
                if self.plan.one_per_message:
                    for _ in range(count):
                        await session.clap(article, 1)
                else:
                    await session.clap(article, count)


async def _run_process(plan: ClapPlan, process: int) -> Ledger:
    ledger = Ledger()
    delay = plan.start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    end_at = time.time() + plan.duration_s
    clappers = [Clapper(plan, i, ledger, end_at) for i in plan.clappers_of(process)]
    # Bounded: tapping stops at end_at and each session waits at most ack_timeout_s after it.
    await asyncio.wait_for(
        asyncio.gather(*(c.run() for c in clappers)), plan.duration_s + plan.ack_timeout_s + 60
    )
    return ledger


def _child_main(pipe: multiprocessing.connection.Connection, plan: ClapPlan, process: int) -> None:
    pipe.send(asyncio.run(_run_process(plan, process)))


class ClapperFleet:
    """Runs ``plan`` in ``plan.processes`` processes and merges their ledgers."""

    def __init__(self, plan: ClapPlan) -> None:
        self.plan = plan
        self._processes: list[tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]] = []

    def start(self) -> list[int]:
        """Start the processes (they wait for ``plan.start_at``); returns their pids."""
        context = multiprocessing.get_context("spawn")
        for index in range(self.plan.processes if self.plan.clappers else 0):
            parent, child = context.Pipe(duplex=False)
            process = context.Process(target=_child_main, args=(child, self.plan, index),
                                      name=f"loadtest-clappers-{index}", daemon=True)
            process.start()
            child.close()
            self._processes.append((process, parent))
        return [p.pid for p, _ in self._processes if p.pid is not None]

    async def result(self) -> Ledger:
        total = Ledger()
        limit = self.plan.start_at - time.time() + self.plan.duration_s + self.plan.ack_timeout_s + 90
        for process, pipe in self._processes:
            ready = await asyncio.to_thread(pipe.poll, max(1.0, limit))
            if ready:
                total.merge(pipe.recv())
            else:
                total.session_errors["clapper_process_timeout"] += 1
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.terminate()  # our own child, by its handle
        return total
