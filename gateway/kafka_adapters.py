"""Kafka adapters of the clap log and the count feed (aiokafka)."""
from __future__ import annotations

import asyncio
import functools
import logging
import types
import uuid
from collections.abc import AsyncIterator, Coroutine, Generator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from core.messages import ClapRecorded, CountChanged, CountingStatus, decode_fan_out, newest_per_article
from core.partitioning import CachedPartitioner, PartitionCache
from core.presence import PresenceReport

log = logging.getLogger(__name__)


class ClapLogUnavailable(ConnectionError):
    """The clap log cannot take events now (no broker reachable); the caller may retry."""


class KafkaClapLog:
    """Appends clap events to the clap topic, keyed by article, acked by all in-sync replicas.

    A gateway must serve readers while Kafka is away, so a failed start does not stop it:
    the producer keeps reconnecting in the background and appends fail at once meanwhile.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: int = 2,
        max_batch_bytes: int = 256 * 1024,
        request_timeout_ms: int = 5_000,
        reconnect_max_s: float = 10.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.linger_ms = linger_ms
        self.max_batch_bytes = max_batch_bytes
        self.request_timeout_ms = request_timeout_ms
        self.reconnect_max_s = reconnect_max_s
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None
        self._partitions: _TopicPartitions | None = None

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,  # a producer retry never writes a clap twice
            linger_ms=self.linger_ms,  # batch concurrent claps into one request
            # aiokafka sends a partition's next batch only once the last one is acked, so one
            # article's claps (one partition) get through at one batch per round trip to the
            # broker. At aiokafka's 16 KiB that is ~100 claps: a hot article's 1,000 claps/s
            # failed appends whenever a busy broker took over 100 ms to ack (BENCHMARKS §2.4).
            max_batch_size=self.max_batch_bytes,
            partitioner=CachedPartitioner(),  # the processor's: claps share a partition with its state
            # A request to a broker that went away fails within this; the gateway's own bound
            # on an append (gateway.server.APPEND_TIMEOUT_S) holds whatever the client does.
            request_timeout_ms=self.request_timeout_ms,
        )

    async def start(self) -> None:
        """Connect now if Kafka answers; otherwise keep trying in the background."""
        if not await self._try_start():
            self._connecting = asyncio.create_task(self._reconnect(), name="clap-log-connect")

    async def _try_start(self) -> bool:
        producer = self._new_producer()
        try:
            await producer.start()
        except Exception as error:  # KafkaConnectionError and kin: no broker answered
            self._last_error = error
            log.warning("clap log: Kafka at %s not reachable (%r); claps are refused until it is", self.bootstrap, error)
            await producer.stop()
            return False
        self._producer = producer
        return True

    async def _reconnect(self) -> None:
        delay = 0.5
        while not await self._try_start():
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_s)
        log.info("clap log: connected to Kafka at %s", self.bootstrap)

    def append(self, clap: ClapRecorded) -> asyncio.Future[int]:
        """The event's offset in its partition once every in-sync replica has it.

        A future rather than a coroutine, as the embedded log's: the gateway appends once per
        clap, and a task per clap plus a pass through aiokafka's ``send`` (a metadata check, the
        partition lists and the serializers, for a record that is already bytes) cost more than
        encoding the record itself. So the record is handed to the producer's batch for its
        partition at once; only when that batch is full, or before this producer knows the
        topic's partitions, does a task wait. ``loadtest.append_cost``: 52 -> 35 and 35 -> 18 us of
        CPU per append in two sittings (docs/BENCHMARKS.md §4.11).
        ``_message_accumulator`` is aiokafka's own (0.14.0, pinned); tests/integration/
        test_kafka_clap_log.py runs both ways against a real broker.
        """
        loop = asyncio.get_running_loop()
        producer = self._producer
        if producer is None:
            refused: asyncio.Future[int] = loop.create_future()
            refused.set_exception(ClapLogUnavailable(f"not connected to Kafka at {self.bootstrap}: {self._last_error!r}"))
            return refused
        key = clap.article.encode()
        partitions = self._partitions
        if partitions is None:
            return asyncio.ensure_future(self._send(producer, clap, key))
        adding = producer._message_accumulator.add_message(
            partitions.of(key), key, clap.to_json(), self.request_timeout_ms / 1000, timestamp_ms=None, headers=[]
        )
        try:
            waiting_on = adding.send(None)
        except StopIteration as added:
            return _offset_once_durable(added.value, loop)
        except Exception as error:  # the producer failed or is closing: nothing was added
            failed: asyncio.Future[int] = loop.create_future()
            failed.set_exception(error)
            return failed
        return asyncio.ensure_future(self._finish_adding(adding, waiting_on))

    async def _send(self, producer: AIOKafkaProducer, clap: ClapRecorded, key: bytes) -> int:
        """aiokafka's own ``send``, which waits for the topic's metadata; then the topic's
        partitions are known and later appends go straight to the batches."""
        delivery = await producer.send(self.topic, clap.to_json(), key=key)
        known = producer.client.cluster.partitions_for_topic(self.topic)
        if known and self._partitions is None:
            self._partitions = _TopicPartitions(self.topic, len(known))
        return (await delivery).offset

    async def _finish_adding(self, adding: Coroutine[Any, Any, asyncio.Future], waiting_on: Any) -> int:
        delivery = await _carry_on(adding, waiting_on)
        return (await delivery).offset

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()


class _TopicPartitions:
    """The clap topic's partition of each article. The partition count is read once: articles
    stay on their partition for the life of the topic (the processor's state is partitioned the
    same way), so the topic is never given more partitions while it is in use (docs/DESIGN.md)."""

    __slots__ = ("by_index", "partition_of")

    def __init__(self, topic: str, count: int) -> None:
        self.by_index = [TopicPartition(topic, index) for index in range(count)]
        self.partition_of = PartitionCache(count)

    def of(self, key: bytes) -> TopicPartition:
        return self.by_index[self.partition_of(key)]


def _offset_once_durable(delivery: asyncio.Future, loop: asyncio.AbstractEventLoop) -> asyncio.Future[int]:
    """A future of the record's offset, settled when aiokafka's delivery future is. Cancelling it
    (the gateway's deadline) does not unsend the record, as with aiokafka's own futures."""
    offset: asyncio.Future[int] = loop.create_future()

    def settle(done: asyncio.Future) -> None:
        if offset.done():
            return
        if done.cancelled():
            offset.cancel()
        elif (error := done.exception()) is not None:
            offset.set_exception(error)
        else:
            offset.set_result(done.result().offset)

    delivery.add_done_callback(settle)
    return offset


@types.coroutine
def _carry_on(coroutine: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, None, Any]:
    """Await a coroutine whose first step was already run, and yielded ``waiting_on``, by hand:
    hand that to the awaiting task, then step the coroutine on as the task would have."""
    pending = waiting_on
    while True:
        try:
            yield pending
        except BaseException as thrown:  # the awaiting task was cancelled: so is the coroutine
            step = functools.partial(coroutine.throw, thrown)
        else:
            step = functools.partial(coroutine.send, None)
        try:
            pending = step()
        except StopIteration as finished:
            return finished.value


def newest_records(batches) -> list[CountChanged | CountingStatus]:
    """The newest total of each article in fetched record batches, then the partitions' counting
    statuses in the order they came, malformed records skipped: a gateway that fell behind
    catches up with one total per article."""
    updates: list[CountChanged] = []
    statuses: list[CountingStatus] = []
    for records in batches:
        for record in records:
            try:
                decoded = decode_fan_out(record.value)
            except (ValueError, KeyError, TypeError):
                log.warning("skipping malformed count message at %s:%d", record.topic, record.offset)
                continue
            if isinstance(decoded, CountingStatus):
                statuses.append(decoded)
            else:
                updates.append(decoded)
    return [*newest_per_article(updates), *statuses]


class KafkaCountFeed:
    """The fan-out topic. Every gateway reads all of it, from its end, with no consumer group:
    a gateway that restarts needs only totals from now on, since joins read the store."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None
        self._consumers: list[AIOKafkaConsumer] = []
        self._partitions: int | None = None

    @property
    def partitions(self) -> int | None:
        """The topic's partitions, once subscribed."""
        return self._partitions

    async def publish(self, updates: Sequence[CountChanged | CountingStatus]) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, partitioner=CachedPartitioner()
            )
            await self._producer.start()
        sent = []
        for update in updates:
            if isinstance(update, CountingStatus):
                # On the partition of the articles it speaks for (see core.messages.CountingStatus).
                sent.append(await self._producer.send(self.topic, update.to_json(), key=update.key, partition=update.partition))
            else:
                sent.append(await self._producer.send(self.topic, update.to_json(), key=update.article.encode()))
        await asyncio.gather(*sent)

    async def subscribe(self) -> AsyncIterator[CountChanged | CountingStatus]:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,  # no group: this gateway gets every partition
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=f"gateway-feed-{uuid.uuid4().hex[:8]}",
            fetch_max_wait_ms=20,  # latency over batching: readers are waiting
        )
        await consumer.start()
        deadline = asyncio.get_running_loop().time() + 30
        while not consumer.assignment():
            if asyncio.get_running_loop().time() > deadline:
                await consumer.stop()
                raise RuntimeError(f"topic {self.topic!r} has no partitions; create it first (make up does)")
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)  # pin "the end" now, so nothing published after this is missed
        self._partitions = len(consumer.assignment())
        self._consumers.append(consumer)
        return self._drain(consumer)

    async def _drain(self, consumer: AIOKafkaConsumer) -> AsyncIterator[CountChanged | CountingStatus]:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for update in newest_records(batches.values()):
                    yield update
        finally:
            await consumer.stop()

    # This feed reads every partition (gateway.feed.PartitionedCountFeed reads only its rooms').
    def follow(self, article: str) -> None:
        return None

    def unfollow(self, article: str) -> None:
        return None

    async def followed(self, article: str) -> None:
        return None

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        for consumer in self._consumers:
            await consumer.stop()


class KafkaPresenceBus:
    """Gateways' reader counts on the ``presence`` topic (one partition, keyed by gateway).

    Read from the end with no consumer group, like the count feed: every gateway reports at least
    every two seconds, so a gateway that starts knows everyone within that and needs no history.
    A report is worth nothing seconds later, so it is sent without waiting for replicas.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None
        self._consumers: list[AIOKafkaConsumer] = []

    async def publish(self, report: PresenceReport) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=1, request_timeout_ms=5_000)
            await producer.start()
            self._producer = producer
        await self._producer.send_and_wait(self.topic, report.to_json(), key=report.gateway.encode())

    async def subscribe(self) -> AsyncIterator[PresenceReport]:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=f"gateway-presence-{uuid.uuid4().hex[:8]}",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        self._consumers.append(consumer)
        return self._drain(consumer)

    async def _drain(self, consumer: AIOKafkaConsumer) -> AsyncIterator[PresenceReport]:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1_000)
                for records in batches.values():
                    for record in records:
                        try:
                            yield PresenceReport.from_json(record.value)
                        except (ValueError, KeyError, TypeError):
                            log.warning("skipping malformed presence report at %s:%d", record.topic, record.offset)
        finally:
            await consumer.stop()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        for consumer in self._consumers:
            await consumer.stop()
