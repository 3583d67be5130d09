"""The embedded processing loop: the same ``core.processing`` rules as the Faust agent.

Every window it applies what the log holds past the last applied offset, closes the windows,
and commits state, applied offset and totals in one SQLite transaction before announcing the
totals: a total a reader has seen can never vanish in a crash, and a crash between commits
only means the same events are applied again from the last committed offset.

Once a second it also says whether it counts live or is still replaying the log (a restart, a
rebuild at a new epoch), as the Faust workers do, so readers are told their count is catching up.
It cannot fall silent while the gateway runs: they share the process, and the process exits when
this loop ends.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Generic, TypeVar

from core.ports import CountFeed
from core.counting import SAY_EVERY_MS, counting_states
from core.messages import CountingStatus
from core.processing import ClapCounter, LogEvent
from embedded.file_log import FileClapLog
from embedded.sqlite_store import SqliteCounterStore

log = logging.getLogger("embedded.processor")

LOG_PARTITION = 0  # the embedded log is one partition

V = TypeVar("V")


class _Tracked(dict[str, V], Generic[V]):
    """A dict that remembers which keys changed since the last ``take_changes``."""

    def __init__(self, initial: dict[str, V]) -> None:
        super().__init__(initial)
        self.changed: set[str] = set()

    def __setitem__(self, key: str, value: V) -> None:
        super().__setitem__(key, value)
        self.changed.add(key)

    def take_changes(self) -> dict[str, V]:
        changes = {key: self[key] for key in self.changed}
        self.changed = set()
        return changes


class EmbeddedProcessor:
    def __init__(
        self,
        clap_log: FileClapLog,
        store: SqliteCounterStore,
        feed: CountFeed,
        *,
        window_ms: int,
        epoch: int,
        max_batch: int = 20_000,
        status_every_s: float = SAY_EVERY_MS / 1000,
    ) -> None:
        self.clap_log = clap_log
        self.store = store
        self.feed = feed
        self.window_ms = window_ms
        self.epoch = epoch
        self.max_batch = max_batch
        self.status_every_s = status_every_s
        self.applied_offset = -1
        self.counter: ClapCounter | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        users, tallies, self.applied_offset = self.store.load_state(self.epoch)
        tracked_users, tracked_tallies = _Tracked(users), _Tracked(tallies)
        counter = ClapCounter(tracked_users, tracked_tallies, epoch=self.epoch)
        counter.assign(LOG_PARTITION, self.clap_log.end_offset, self.applied_offset + 1)
        self.counter = counter
        if self.applied_offset + 1 > self.clap_log.end_offset:
            log.warning(
                "applied offset %d is past the log's durable end %d (a data dir from before durable ends?)",
                self.applied_offset, self.clap_log.end_offset,
            )
        log.info("embedded processor resuming after log offset %d", self.applied_offset)
        inbox: asyncio.Queue[tuple[int, object]] = asyncio.Queue(maxsize=self.max_batch)
        reader = asyncio.create_task(self._read_log(inbox), name="log-reader")
        self.ready.set()
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        next_status = next_tick
        try:
            while True:
                # A fixed cadence: the period is the window, not the window plus the work.
                next_tick += self.window_ms / 1000
                await asyncio.sleep(max(0.0, next_tick - loop.time()))
                next_tick = max(next_tick, loop.time() - self.window_ms / 1000)
                if reader.done():
                    reader.result()  # re-raise what stopped it
                if loop.time() >= next_status:
                    next_status = loop.time() + self.status_every_s
                    await self.feed.publish(self._statuses(counter))
                batch = []
                while not inbox.empty():
                    offset, clap = inbox.get_nowait()
                    batch.append(LogEvent(LOG_PARTITION, offset, clap))
                if not batch:
                    continue
                totals = counter.step(batch)
                applied = batch[-1].offset
                await self.store.commit(
                    tracked_users.take_changes(), tracked_tallies.take_changes(), applied, self.epoch, totals
                )
                self.applied_offset = applied
                await self.feed.publish(totals)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def _statuses(self, counter: ClapCounter) -> list[CountingStatus]:
        states = counting_states([LOG_PARTITION], held=counter.catching_up)
        return [CountingStatus(partition, state, self.epoch) for partition, state in states.items()]

    async def _read_log(self, inbox: asyncio.Queue) -> None:
        # A bounded queue: when the processor falls behind, reading the log waits for it.
        async for offset, clap in self.clap_log.read(self.applied_offset + 1, follow=True):
            await inbox.put((offset, clap))
