"""Record batches sent by ``processor.bulk_send`` land in order, and their acknowledgements name
exactly the offsets each message got: the store matches its writes to them one by one."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from core.partitioning import PartitionCache
from processor.bulk_send import by_partition, send_in_batches

pytestmark = pytest.mark.services

BOOTSTRAP = "127.0.0.1:9092"
PARTITIONS = 3


async def read_partition(topic: str, partition: int, count: int) -> list[tuple[int, bytes, bytes | None]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[tuple[int, bytes, bytes | None]] = []
        async with asyncio.timeout(30):
            while len(records) < count:
                batch = await consumer.getmany(tp, timeout_ms=500)
                records += [(r.offset, r.key, r.value) for r in batch.get(tp, [])]
        return records
    finally:
        await consumer.stop()


async def test_messages_sent_in_record_batches_are_acknowledged_at_their_own_offsets(real_services):
    topic = f"bulk-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    # Small record batches, so that each partition's messages need several of them.
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True, max_batch_size=4096)
    await producer.start()
    try:
        messages = [(f"art{i % 7}:u{i}".encode(), b'{"claps":%d,"pad":"%s"}' % (i, b"x" * (i % 50))) for i in range(1500)]
        messages.append((b"art3:gone", None))  # a tombstone goes in order too
        # A message sent the usual way first: the batches must start after it, not share its offsets.
        await producer.send_and_wait(topic, b"before", key=b"art0", partition=0)
        groups = by_partition(messages, PartitionCache(PARTITIONS))
        acked: dict[int, list[tuple[int, int]]] = {p: [] for p in groups}
        futures = []
        for partition, group in groups.items():
            futures += await send_in_batches(
                producer, topic, partition, group, lambda first, count, p=partition: acked[p].append((first, count)))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    assert sum(len(group) for group in groups.values()) == len(messages)
    for partition, group in groups.items():
        first_offset = 1 if partition == 0 else 0
        assert len(acked[partition]) > 1  # several record batches
        # The acknowledged ranges cover the partition's messages exactly, in send order.
        offsets = [offset for first, count in acked[partition] for offset in range(first, first + count)]
        assert offsets == list(range(first_offset, first_offset + len(group)))
        records = await read_partition(topic, partition, first_offset + len(group))
        assert [(offset, key, value) for offset, key, value in records[first_offset:]] == [
            (offset, key, value) for offset, (key, value) in zip(offsets, group)]
