"""ClapLogOnThread: claps appended from one loop, run on a thread's loop, settled back in batches.

The log here is a stand-in with the port's shape (the Kafka adapter runs through the same wrapper
in tests/contract); what is tested is the handing over: every clap reaches the log once, every
caller gets its own outcome, nothing is lost between the loops.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from core.messages import ClapRecorded, CountChanged, CountingStatus
from gateway.threaded import ClapLogOnThread, CountFeedOnThread


def clap(n: int, article: str = "a1") -> ClapRecorded:
    return ClapRecorded(article, f"u{n}", 1, f"c{n}", 1_000 + n)


class StandInLog:
    """Offsets in arrival order; claps whose id is in ``failing`` raise; ``hold`` keeps appends open."""

    def __init__(self, *, failing: frozenset[str] = frozenset()) -> None:
        self.failing = failing
        self.appended: list[ClapRecorded] = []
        self.threads: set[int] = set()
        self.hold: asyncio.Event | None = None
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def append(self, clap: ClapRecorded) -> int:
        self.threads.add(threading.get_ident())
        if clap.clap_id in self.failing:
            raise ConnectionError(f"refused {clap.clap_id}")
        offset = len(self.appended)
        self.appended.append(clap)
        if self.hold is not None:
            await self.hold.wait()
        return offset

    async def close(self) -> None:
        self.closed = True
        if self.hold is not None:
            self.hold.set()


async def started(inner: StandInLog) -> ClapLogOnThread:
    log = ClapLogOnThread(lambda: inner, name="test-clap-log")
    await log.start()
    return log


async def test_every_clap_is_appended_once_on_the_log_thread_and_each_caller_gets_its_offset():
    inner = StandInLog()
    log = await started(inner)
    try:
        claps = [clap(n) for n in range(2_000)]
        offsets = await asyncio.gather(*(log.append(c) for c in claps))
    finally:
        await log.close()
    assert sorted(offsets) == list(range(2_000))
    assert [c.clap_id for c in inner.appended] == [c.clap_id for c in claps]  # one loop, queue order
    assert {inner.appended[offset].clap_id for offset in offsets} == {c.clap_id for c in claps}
    assert all(inner.appended[offset] == c for offset, c in zip(offsets, claps))
    assert inner.threads and threading.get_ident() not in inner.threads
    assert inner.started and inner.closed


async def test_claps_queued_in_separate_turns_all_settle():
    inner = StandInLog()
    log = await started(inner)
    try:
        offsets = []
        for n in range(300):
            offsets.append(await log.append(clap(n)))  # one at a time: a wake-up per clap
            if n % 7 == 0:
                await asyncio.sleep(0)
    finally:
        await log.close()
    assert offsets == list(range(300))


async def test_a_failed_append_fails_only_its_own_caller():
    inner = StandInLog(failing=frozenset({"c3", "c7"}))
    log = await started(inner)
    try:
        outcomes = await asyncio.gather(*(log.append(clap(n)) for n in range(10)), return_exceptions=True)
    finally:
        await log.close()
    failed = {n for n, outcome in enumerate(outcomes) if isinstance(outcome, BaseException)}
    assert failed == {3, 7}
    assert all(isinstance(outcomes[n], ConnectionError) for n in failed)
    assert sorted(o for o in outcomes if isinstance(o, int)) == list(range(8))


async def test_a_caller_that_gives_up_leaves_the_others_settled():
    inner = StandInLog()
    inner.hold = asyncio.Event()  # created on this loop but only awaited and set on the log's
    log = await started(inner)
    try:
        given_up = log.append(clap(0))
        kept = log.append(clap(1))
        await asyncio.sleep(0.05)
        given_up.cancel()  # the gateway's append deadline
        log._thread.call(inner.hold.set)
        assert await asyncio.wait_for(kept, 5) == 1
    finally:
        await log.close()
    assert given_up.cancelled()
    assert [c.clap_id for c in inner.appended] == ["c0", "c1"]  # the log still got it


async def test_appends_before_start_and_after_close_fail_at_once():
    inner = StandInLog()
    log = ClapLogOnThread(lambda: inner)
    with pytest.raises(RuntimeError, match="not started"):
        await log.append(clap(0))
    await log.start()
    await log.close()
    with pytest.raises(RuntimeError, match="closed"):
        await log.append(clap(1))
    assert inner.appended == []


async def test_close_settles_appends_still_open_and_stops_the_thread():
    inner = StandInLog()
    inner.hold = asyncio.Event()
    log = await started(inner)
    pending = [log.append(clap(n)) for n in range(5)]
    await asyncio.sleep(0.05)
    await log.close()  # the stand-in's close lets its open appends finish, as the producer's flush does
    assert [await asyncio.wait_for(p, 1) for p in pending] == list(range(5))
    assert not log._thread.alive


# -- the count feed ----------------------------------------------------------------------------

class StandInFeed:
    """The gateway's side of a count feed; what it yields is pushed in by the test on its loop."""

    def __init__(self) -> None:
        self.partitions = 12
        self.calls: list[tuple[str, str, int]] = []  # (what, article, thread)
        self.incoming: asyncio.Queue | None = None
        self.closed = False

    def follow(self, article: str) -> None:
        self.calls.append(("follow", article, threading.get_ident()))

    def unfollow(self, article: str) -> None:
        self.calls.append(("unfollow", article, threading.get_ident()))

    async def followed(self, article: str, timeout_s: float = 5.0) -> None:
        self.calls.append(("followed", article, threading.get_ident()))

    async def subscribe(self):
        self.incoming = asyncio.Queue()
        return self._read()

    async def _read(self):
        assert self.incoming is not None
        while True:
            item = await self.incoming.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def publish(self, updates) -> None:
        raise AssertionError("a gateway never publishes totals")

    async def close(self) -> None:
        self.closed = True


def total(article: str, seq: int) -> CountChanged:
    return CountChanged(article, seq * 10, 1, seq, 1, 1_000 + seq)


async def feed_on_thread() -> tuple[CountFeedOnThread, StandInFeed]:
    inner = StandInFeed()
    feed = CountFeedOnThread(lambda: inner, name="test-count-feed")
    await feed.start()
    return feed, inner


def push(feed: CountFeedOnThread, inner: StandInFeed, *items) -> None:
    for item in items:
        feed._thread.call(inner.incoming.put_nowait, item)  # type: ignore[union-attr]


async def test_follows_run_on_the_feed_thread_in_the_order_they_were_made():
    feed, inner = await feed_on_thread()
    try:
        feed.follow("a1")
        feed.follow("a2")
        feed.unfollow("a1")
        await feed.followed("a2")  # handed over after the follows, so it sees them done
    finally:
        await feed.close()
    assert [(what, article) for what, article, _ in inner.calls] == [
        ("follow", "a1"), ("follow", "a2"), ("unfollow", "a1"), ("followed", "a2")]
    assert {thread for _, _, thread in inner.calls} != {threading.get_ident()}
    assert len({thread for _, _, thread in inner.calls}) == 1
    assert feed.partitions == 12 and inner.closed


async def test_the_caller_gets_the_newest_total_per_article_and_the_newest_status_per_partition():
    feed, inner = await feed_on_thread()
    try:
        updates = await feed.subscribe()
        # Everything pushed before the caller looks: held, and replaced by what is newer.
        push(feed, inner, total("a1", 1), total("a2", 1), total("a1", 3), total("a1", 2),
             CountingStatus(4, "live", 1), CountingStatus(4, "catching_up", 1), CountingStatus(5, "live", 1))
        await asyncio.sleep(0.2)
        seen = []
        async for update in updates:
            seen.append(update)
            if len(seen) == 4:
                break
        push(feed, inner, total("a2", 7))
        later = await asyncio.wait_for(updates.__anext__(), 5)
    finally:
        await feed.close()
    assert seen == [total("a1", 3), total("a2", 1), CountingStatus(4, "catching_up", 1), CountingStatus(5, "live", 1)]
    assert later == total("a2", 7)


async def test_every_total_reaches_the_caller_when_it_keeps_up():
    feed, inner = await feed_on_thread()
    try:
        updates = await feed.subscribe()
        got = []
        for seq in range(1, 201):
            push(feed, inner, total("a1", seq))
            got.append(await asyncio.wait_for(updates.__anext__(), 5))
    finally:
        await feed.close()
    assert [u.seq for u in got] == list(range(1, 201))


async def test_a_subscription_that_fails_on_the_feed_thread_fails_the_caller():
    feed, inner = await feed_on_thread()
    try:
        updates = await feed.subscribe()
        push(feed, inner, total("a1", 1), ConnectionError("broker gone"))
        first = await asyncio.wait_for(updates.__anext__(), 5)
        with pytest.raises(RuntimeError, match="stopped") as failure:
            await asyncio.wait_for(updates.__anext__(), 5)
    finally:
        await feed.close()
    assert first == total("a1", 1)
    assert isinstance(failure.value.__cause__, ConnectionError)
    assert not feed._thread.alive
