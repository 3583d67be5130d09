"""The gateway's Kafka clients, each on an event loop of its own thread.

Why threads: aiokafka reads a broker's answer on the loop that sent the request, and it sends a
broker its next produce request only once the last one is answered. On the gateway's loop every
answer, a produce's or a fetch's, waits behind each chunk of a hot room's fan-out and the acks
written meanwhile, so a clap's way to the log and a total's way back both take as long as the
loop's turns (BENCHMARKS §4.9). On a loop of their own the answers are read as soon as the thread
gets the GIL, which the fan-out's socket writes release during each ``send``.

Work crosses between the loops in batches: a loop queues and wakes the other at most once until
that one has taken what is queued, so a turn of either costs one wake-up, not one per clap or
per total.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Protocol

from core.messages import ClapRecorded, CountChanged, CountingStatus, is_newer

log = logging.getLogger(__name__)


class StartableClapLog(Protocol):
    async def start(self) -> None: ...

    async def append(self, clap: ClapRecorded) -> int: ...

    async def close(self) -> None: ...


# What the log's loop hands back per clap: the caller's future, and its offset or its error.
Outcome = tuple["asyncio.Future[int]", int, BaseException | None]


class ClapLogOnThread:
    """``make_log()``'s appends, run on a thread's loop; the ``ClapLog`` port on the caller's.

    ``append`` returns a future of the caller's loop. Cancelling it (the gateway's append
    deadline) does not recall the clap, which may still land in the log, as a cancelled
    ``wait_for`` on the log would not either; its outcome is then dropped.
    """

    def __init__(self, make_log: Callable[[], StartableClapLog], *, name: str = "clap-log") -> None:
        self._make_log = make_log
        self._thread = LoopThread(name)
        self._log: StartableClapLog | None = None
        self._caller_loop: asyncio.AbstractEventLoop | None = None
        # deque's append and popleft are atomic: each side only appends to one and pops the other.
        self._outbox: deque[tuple[ClapRecorded, asyncio.Future[int]]] = deque()
        self._inbox: deque[Outcome] = deque()
        self._taking = False  # a _take is scheduled on the log's loop and has not started draining
        self._settling = False  # a _settle is scheduled on the caller's loop and has not started
        self._appending: set[asyncio.Task[int]] = set()
        self._closed = False

    async def start(self) -> None:
        """Start the thread and its log (the log's own start: it may keep connecting in the background)."""
        self._caller_loop = asyncio.get_running_loop()
        await self._thread.start()
        await self._thread.run(self._start_log())

    async def _start_log(self) -> None:
        self._log = self._make_log()
        await self._log.start()

    def append(self, clap: ClapRecorded) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        if self._closed or self._thread.loop is None:
            done.set_exception(RuntimeError("clap log is closed" if self._closed else "clap log not started"))
            return done
        self._outbox.append((clap, done))
        if not self._taking:
            self._taking = True
            self._thread.call(self._take)
        return done

    # -- on the log's loop ---------------------------------------------------------------------

    def _take(self) -> None:
        # Cleared before draining: a clap queued after this line wakes another _take, and one
        # queued before it is drained below, so none is left behind.
        self._taking = False
        assert self._log is not None
        while self._outbox:
            clap, done = self._outbox.popleft()
            task = asyncio.ensure_future(self._log.append(clap))
            self._appending.add(task)
            task.add_done_callback(partial(self._appended, done))

    def _appended(self, done: asyncio.Future[int], task: asyncio.Task[int]) -> None:
        self._appending.discard(task)
        if task.cancelled():
            outcome: Outcome = (done, -1, asyncio.CancelledError("append cancelled"))
        elif (error := task.exception()) is not None:
            outcome = (done, -1, error)
        else:
            outcome = (done, task.result(), None)
        self._inbox.append(outcome)
        if not self._settling:
            self._settling = True
            assert self._caller_loop is not None
            try:
                self._caller_loop.call_soon_threadsafe(self._settle)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
                pass

    # -- on the caller's loop ------------------------------------------------------------------

    def _settle(self) -> None:
        self._settling = False
        while self._inbox:
            done, offset, error = self._inbox.popleft()
            if done.done():  # given up by its caller meanwhile
                continue
            if error is None:
                done.set_result(offset)
            else:
                done.set_exception(error)

    async def close(self) -> None:
        """Close the log (its pending appends end as it ends them), then the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.loop is None:
            return
        try:
            if self._log is not None:
                await self._thread.run(self._close_log())
        finally:
            await self._thread.stop()
            self._settle()  # outcomes of appends that ended while the log closed

    async def _close_log(self) -> None:
        assert self._log is not None
        await self._log.close()
        if self._appending:  # ended by the close, or soon after it
            await asyncio.wait(set(self._appending), timeout=5)


class LoopThread:
    """A thread that runs an event loop until stopped; coroutines and calls are handed to it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        await asyncio.to_thread(ready.wait)

    async def run(self, coroutine):
        """``coroutine``'s outcome, run on the thread's loop, awaited on the caller's."""
        assert self.loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def call(self, callback, *args) -> None:
        """``callback(*args)`` on the thread's loop, after every call handed over before it."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(callback, *args)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def stop(self) -> None:
        """Cancel what still runs on the thread's loop, let it finish, then end the thread."""
        if self.loop is None or self._thread is None or not self._thread.is_alive():
            return
        try:
            await asyncio.wait_for(self.run(_cancel_the_rest()), 10)
        except (RuntimeError, TimeoutError):  # the loop already stopped, or a task would not end
            pass
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already closed
            pass
        await asyncio.to_thread(self._thread.join, 10)


async def _cancel_the_rest() -> None:
    rest = asyncio.all_tasks() - {asyncio.current_task()}
    for task in rest:
        task.cancel()
    if rest:
        await asyncio.wait(rest, timeout=5)


class CountFeedOnThread:
    """A gateway's count feed read on a loop of its own thread; the rooms' side on the caller's.

    The feed's fetches are answered on its thread as soon as it gets the GIL, not behind a hot
    room's fan-out. What it reads is held until the caller's loop takes it, the newest total per
    article and the newest counting status per partition and epoch (each replaces the one before
    it, as on the compacted topic), so the hand-over is bounded by the followed articles however
    far the caller's loop falls behind, and it takes one wake-up per batch.
    """

    def __init__(self, make_feed: Callable[[], "ThreadableFeed"], *, name: str = "count-feed") -> None:
        self._make_feed = make_feed
        self._thread = LoopThread(name)
        self._feed: ThreadableFeed | None = None
        self._totals: dict[str, CountChanged] = {}  # filled on the feed's loop, taken on the caller's
        self._statuses: dict[tuple[int, int], CountingStatus] = {}
        self._lock = threading.Lock()
        self._ready: asyncio.Event | None = None
        self._waking = False
        self._caller_loop: asyncio.AbstractEventLoop | None = None
        self._pump: asyncio.Task[None] | None = None
        self._ended: BaseException | None = None

    @property
    def inner(self) -> "ThreadableFeed":
        assert self._feed is not None, "not started"
        return self._feed

    @property
    def partitions(self) -> int | None:
        return self._feed.partitions if self._feed is not None else None

    async def publish(self, updates) -> None:
        await self._thread.run(self.inner.publish(updates))

    async def start(self) -> None:
        """Start the thread and make the feed on it (before any follow)."""
        if self._thread.loop is None:
            self._caller_loop = asyncio.get_running_loop()
            self._ready = asyncio.Event()
            await self._thread.start()
            await self._thread.run(self._make())

    async def _make(self) -> None:
        self._feed = self._make_feed()

    def follow(self, article: str) -> None:
        self._thread.call(self.inner.follow, article)

    def unfollow(self, article: str) -> None:
        self._thread.call(self.inner.unfollow, article)

    async def followed(self, article: str, timeout_s: float = 5.0) -> None:
        # Handed over after any follow() made before it, so it waits for that partition.
        await self._thread.run(self.inner.followed(article, timeout_s))

    async def subscribe(self) -> AsyncIterator[CountChanged | CountingStatus]:
        await self.start()
        updates = await self._thread.run(self.inner.subscribe())
        self._pump = asyncio.run_coroutine_threadsafe(self._read(updates), self._thread.loop)  # type: ignore[arg-type]
        return self._take()

    # -- on the feed's loop ----------------------------------------------------------------------

    async def _read(self, updates: AsyncIterator[CountChanged | CountingStatus]) -> None:
        try:
            async for update in updates:
                with self._lock:
                    if isinstance(update, CountingStatus):
                        self._statuses[(update.partition, update.epoch)] = update
                    else:
                        held = self._totals.get(update.article)
                        if held is None or is_newer(update.position(), held.position()):
                            self._totals[update.article] = update
                self._wake()
        except BaseException as error:  # the caller's side must not go on half-deaf
            self._ended = error
            self._wake()
            raise

    def _wake(self) -> None:
        if not self._waking and self._caller_loop is not None and self._ready is not None:
            self._waking = True
            try:
                self._caller_loop.call_soon_threadsafe(self._ready.set)
            except RuntimeError:  # the caller's loop is closed
                pass

    # -- on the caller's loop --------------------------------------------------------------------

    async def _take(self) -> AsyncIterator[CountChanged | CountingStatus]:
        assert self._ready is not None
        while True:
            if self._ended is None:  # once ended, nothing will wake us: take what is left, then raise
                await self._ready.wait()
            self._ready.clear()
            self._waking = False  # before taking: a total read after this line wakes us again
            with self._lock:
                totals, self._totals = self._totals, {}
                statuses, self._statuses = self._statuses, {}
            for update in totals.values():
                yield update
            for status in statuses.values():
                yield status
            if self._ended is not None and not totals and not statuses:
                if isinstance(self._ended, asyncio.CancelledError):
                    raise RuntimeError("the count feed's reader was cancelled")
                raise RuntimeError("the count feed's reader stopped") from self._ended

    async def close(self) -> None:
        if self._thread.loop is None:
            return
        try:
            if self._pump is not None:
                self._pump.cancel()  # ends the subscription's reads; stop() waits for it
            if self._feed is not None:
                await self._thread.run(self._feed.close())
        finally:
            await self._thread.stop()


class ThreadableFeed(Protocol):
    """What the gateway asks of its count feed (gateway.feed.PartitionedCountFeed)."""

    @property
    def partitions(self) -> int | None: ...

    async def publish(self, updates) -> None: ...

    def follow(self, article: str) -> None: ...

    def unfollow(self, article: str) -> None: ...

    async def followed(self, article: str, timeout_s: float = 5.0) -> None: ...

    async def subscribe(self) -> AsyncIterator[CountChanged | CountingStatus]: ...

    async def close(self) -> None: ...
