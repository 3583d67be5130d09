"""Reading a clap partition again from the first offset its delivery skipped.

The counter applies nothing past a hole (``core.processing.ClapCounter.holes``) and the worker
acks only what it applied, so no commit passes a hole and it is only a delay. A seek can be
undone by records the fetcher had already taken past it, so it is repeated (at most once a
second per partition) until the hole is filled. A hole the log can no longer fill (retention
deleted it) is skipped with an error; one that stays open for ``give_up_after_s`` ends the worker
before it commits, so that its restart reads from the committed offset.

A rebalance may take the partition away while a reread is on its way (the lookups here wait on
the broker, and a stalled broker makes that wait long): the counter forgets a revoked
partition's hole, so the reread looks again after each wait and seeks only a partition the
counter still holds a hole for, and a seek that the consumer refuses because the partition is
no longer assigned is not a failure. The new owner reads that partition from the committed
offset, which is not past the hole.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from aiokafka.errors import IllegalStateError
from faust.types import TP

from core.processing import ClapCounter

log = logging.getLogger("processor")


class Seeking(Protocol):
    """What the rereader needs of Faust's consumer."""

    async def earliest_offsets(self, *partitions: TP) -> dict[TP, int]: ...

    async def position(self, tp: TP) -> int | None: ...

    async def seek_wait(self, partitions: dict[TP, int]) -> None: ...


def _exit_before_commit() -> None:
    logging.shutdown()
    os._exit(70)


class HoleRereader:
    seek_every_s = 1.0
    give_up_after_s = 60.0
    # How often the adapter looks at the tail (``look_at_the_tail``), and in how many looks in a
    # row a partition's counting must not have moved: a tail hole is found after 1.0-1.5 s. A
    # takeover's first records can be such a hole, and looks every 2 s made a takeover take
    # 4.2-6.7 s (BENCHMARKS §6); a single 0.5 s look also took a loop stalled for half a second
    # under load for a hole (a needless, harmless seek).
    look_every_s = 0.5
    looks_unmoved = 2

    def __init__(
        self,
        counter: ClapCounter,
        topic: str,
        consumer: Callable[[], Seeking],
        *,
        rebalancing: Callable[[], bool],
        clock: Callable[[], float],
        give_up: Callable[[], Any] = _exit_before_commit,
    ) -> None:
        self.counter = counter
        self.topic = topic
        self._consumer = consumer
        self._rebalancing = rebalancing
        self._clock = clock
        self._give_up = give_up
        self.first_seen: dict[int, tuple[int, float]] = {}  # partition -> (hole offset, first seen)
        self.last_seek: dict[int, float] = {}
        self.batch_in_progress = False  # set by the counting loop around each batch
        self.earlier_looks: deque[dict[int, int]] = deque(maxlen=self.looks_unmoved)

    async def look_at_the_tail(self) -> None:
        """A hole at the end of a delivery has no later event to reveal it: a partition whose
        counting has not moved in ``looks_unmoved`` looks while the fetcher is past it lost
        records."""
        if self._rebalancing() or self.batch_in_progress:
            # Records wait in the consumer while a rebalance restores tables, and a batch can wait
            # out a stalled broker in its flush: counting that has not moved is not a hole then.
            self.earlier_looks.clear()
            return
        expected = self.counter.expected_offsets
        full = len(self.earlier_looks) == self.looks_unmoved
        for partition, offset in expected.items():
            if not full or any(look.get(partition) != offset for look in self.earlier_looks):
                continue
            try:
                fetched_to = await self._consumer().position(TP(self.topic, partition))
            except Exception:  # a rebalance took the partition meanwhile: the next look sees it
                continue
            if fetched_to is not None and self.counter.expected_offsets.get(partition) == offset:
                self.counter.delivered_before(partition, fetched_to)
        self.earlier_looks.append(expected)
        if self.counter.holes:
            await self.reread()

    async def reread(self) -> None:
        """Seek each partition with an open hole back to it (see the module's docstring)."""
        now = self._clock()
        open_holes = self.counter.holes
        for partition, (offset, first) in list(self.first_seen.items()):
            if open_holes.get(partition) != offset:
                how = "filled" if partition in self.counter.expected_offsets else "left with the partition"
                log.info("hole at offset %d of clap partition %d %s after %.1f s", offset, partition, how, now - first)
                del self.first_seen[partition]
                self.last_seek.pop(partition, None)
        for partition, offset in open_holes.items():
            if now - self.last_seek.get(partition, -self.seek_every_s) < self.seek_every_s:
                continue
            _, first = self.first_seen.setdefault(partition, (offset, now))
            if now - first > self.give_up_after_s:
                log.critical("clap partition %d still misses offset %d after %.0f s; exiting before offsets commit",
                             partition, offset, now - first)
                self._give_up()
                return
            tp = TP(self.topic, partition)
            start = (await self._consumer().earliest_offsets(tp)).get(tp, 0)
            if self.counter.holes.get(partition) != offset:
                continue  # revoked (or filled) while the broker answered
            if start > offset:
                log.error("clap partition %d lost offsets %d-%d to retention before they were counted",
                          partition, offset, start - 1, extra={"partition": partition, "offset": offset})
                self.counter.read_from(partition, start)
                offset = start
            log.warning("delivery of clap partition %d skipped from offset %d; reading it again", partition, offset,
                        extra={"partition": partition, "offset": offset})
            try:
                # In the consumer's own thread, as Faust's recovery seeks; it resets the read offset too.
                await self._consumer().seek_wait({tp: offset})
            except IllegalStateError:
                log.info("clap partition %d was revoked before its reread; its new owner reads it from the "
                         "committed offset", partition)
                continue
            self.last_seek[partition] = now
