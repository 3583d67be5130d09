"""The fan-out topic, read only in the partitions that hold this gateway's rooms.

A gateway that reads the whole fan-out topic parses every total of every article and drops those
it has no reader of: with G gateways the brokers serve every total G times, and each gateway's
CPU grows with the platform's total rate rather than with its own readers (docs/DESIGN.md §7.3,
measured by ``python -m loadtest.feed_cost``). This feed reads a partition from the moment its
first room opens until its last room closes.

Correct for any routing of readers: a room's totals are all in its article's partition. It pays
off when readers are routed by that partition (``core.routing``), so each gateway's rooms fall
into a few partitions.

Positions are this feed's own, not the consumer's. aiokafka's ``assign()`` replaces the whole
assignment and forgets every position, so after each change every followed partition is sought
back to the offset after the last record this feed handed out. A partition starts at its end
offset, taken before ``followed()`` returns: the caller reads the store after that, so a total
is either in what the store had or at or after that offset.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IllegalStateError

from core.messages import CountChanged, CountingStatus
from core.routing import PartitionInterest, shard_of
from gateway.kafka_adapters import KafkaCountFeed, newest_records

log = logging.getLogger(__name__)


async def partition_count(bootstrap: str, topic: str, timeout_s: float = 30) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            described = (await admin.describe_topics([topic]))[0]
            if described["error_code"] == 0 and described["partitions"]:
                return len(described["partitions"])
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"topic {topic!r} has no partitions; create it first (make up does)")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


class PartitionedCountFeed(KafkaCountFeed):
    """``KafkaCountFeed`` (publishing is the same) whose subscription reads only followed partitions.

    One subscriber per instance: a gateway has one feed. ``records_read`` counts the records
    fetched per partition, so a test or a benchmark can see what was read, not only what was used.
    """

    def __init__(self, bootstrap: str, topic: str, *, fetch_max_wait_ms: int = 20) -> None:
        super().__init__(bootstrap, topic)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.records_read: dict[int, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._interest: PartitionInterest | None = None
        self._early: set[str] = set()  # followed before subscribe() knew the partition count
        self._next: dict[int, int] = {}  # partition -> offset of the next record to hand out
        self._pinned: dict[int, asyncio.Future[None]] = {}  # partition -> its start offset is known
        self._to_pin: set[int] = set()
        self._wake_pinner = asyncio.Event()
        self._assigned = asyncio.Event()
        self._pinner: asyncio.Task[None] | None = None

    # -- which partitions ------------------------------------------------------------------

    def follow(self, article: str) -> None:
        if self._interest is None:
            self._early.add(article)
            return
        shard = self._interest.open(article)
        if shard is not None:
            self._pinned[shard] = asyncio.get_running_loop().create_future()
            self._to_pin.add(shard)
            self._wake_pinner.set()

    def unfollow(self, article: str) -> None:
        if self._interest is None:
            self._early.discard(article)
            return
        shard = self._interest.close(article)
        if shard is None:
            return
        self._to_pin.discard(shard)
        pinned = self._pinned.pop(shard)
        if not pinned.done():
            pinned.set_result(None)  # nobody is waiting for a partition nobody needs
        if self._next.pop(shard, None) is not None:
            self._apply_assignment()

    async def followed(self, article: str, timeout_s: float = 5.0) -> None:
        """Return once every total of ``article`` published from now on will be delivered.

        While Kafka cannot say where the partition ends, this gives up after ``timeout_s`` (with a
        warning) rather than hold the room's first total: the room then shows the store's total,
        and its live totals start once the partition is read (a total published in between
        reaches it with the article's next one).
        """
        if self._interest is None or not self._interest.follows(article):
            return
        pinned = self._pinned.get(shard_of(article, self._interest.partitions))
        if pinned is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(pinned), timeout_s)
        except TimeoutError:
            log.warning("feed: partition of %s not pinned after %.0f s; its live totals start late", article, timeout_s)

    @property
    def following(self) -> frozenset[int]:
        """The partitions being read now."""
        return frozenset(self._next)

    def _apply_assignment(self) -> None:
        """Assign exactly the pinned partitions, each at this feed's own position.

        Synchronous on purpose: no record can be handed out between the new assignment and the
        seeks, so no position is lost or repeated.
        """
        assert self._consumer is not None
        tps = {p: TopicPartition(self.topic, p) for p in sorted(self._next)}
        self._consumer.assign(list(tps.values()))
        for p, tp in tps.items():
            self._consumer.seek(tp, self._next[p])
        if tps:
            self._assigned.set()
        else:
            self._assigned.clear()

    async def _pin_new_partitions(self) -> None:
        """Take the end offset of each newly needed partition, then start reading it there."""
        assert self._consumer is not None
        while True:
            await self._wake_pinner.wait()
            self._wake_pinner.clear()
            batch = sorted(self._to_pin)
            if not batch:
                continue
            try:
                ends = await self._consumer.end_offsets([TopicPartition(self.topic, p) for p in batch])
            except Exception as error:  # Kafka away: those rooms wait for live totals, nothing else does
                log.warning("feed: end offsets of partitions %s not read (%r); retrying", batch, error)
                await asyncio.sleep(1)
                self._wake_pinner.set()
                continue
            pinned = [p for p in batch if p in self._to_pin]  # a partition may have closed meanwhile
            for p in pinned:
                self._to_pin.discard(p)
                self._next[p] = ends[TopicPartition(self.topic, p)]
            if pinned:
                self._apply_assignment()
            for p in pinned:
                if not self._pinned[p].done():
                    self._pinned[p].set_result(None)

    # -- reading ---------------------------------------------------------------------------

    async def subscribe(self) -> AsyncIterator[CountChanged | CountingStatus]:
        if self._consumer is not None:
            raise RuntimeError("a PartitionedCountFeed has one subscriber")
        partitions = await partition_count(self.bootstrap, self.topic)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,  # no group: partitions are chosen here, by the rooms
            enable_auto_commit=False,
            auto_offset_reset="latest",  # never used: every partition is sought explicitly
            client_id=f"gateway-feed-{uuid.uuid4().hex[:8]}",
            fetch_max_wait_ms=self.fetch_max_wait_ms,  # latency over batching: readers are waiting
        )
        await consumer.start()
        self._consumer = consumer
        self._consumers.append(consumer)
        self._interest = PartitionInterest(partitions)
        self._partitions = partitions
        self._pinner = asyncio.create_task(self._pin_new_partitions(), name="feed-pinner")
        early, self._early = self._early, set()
        for article in early:
            self.follow(article)
        return self._drain(consumer)

    async def _drain(self, consumer: AIOKafkaConsumer) -> AsyncIterator[CountChanged | CountingStatus]:
        assert self._pinner is not None
        try:
            while True:
                if self._pinner.done():
                    self._pinner.result()  # raises what ended it: the gateway must not go on half-deaf
                    raise RuntimeError("the feed's partition pinner stopped")
                if not self._assigned.is_set():
                    await self._wait_for_a_partition()
                try:
                    batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                except IllegalStateError:
                    continue  # the assignment changed under the fetch; the next one is current
                followed = []
                # Positions first, before anything is yielded (a yield lets rooms open and close).
                for tp, records in batches.items():
                    if not records or tp.partition not in self._next:
                        continue  # a partition closed after these were fetched
                    self._next[tp.partition] = records[-1].offset + 1
                    self.records_read[tp.partition] = self.records_read.get(tp.partition, 0) + len(records)
                    followed.append(records)
                for update in newest_records(followed):
                    yield update
        finally:
            self._pinner.cancel()
            await consumer.stop()

    async def _wait_for_a_partition(self) -> None:
        """Sleep while no room is open, but end with the pinner if it fails."""
        assert self._pinner is not None
        assigned = asyncio.ensure_future(self._assigned.wait())
        try:
            await asyncio.wait([assigned, self._pinner], return_when=asyncio.FIRST_COMPLETED)
        finally:
            assigned.cancel()
        if self._pinner.done():
            self._pinner.result()  # raises what ended it
            raise RuntimeError("the feed's partition pinner stopped")

    async def close(self) -> None:
        if self._pinner is not None:
            self._pinner.cancel()
            await asyncio.gather(self._pinner, return_exceptions=True)
        await super().close()
