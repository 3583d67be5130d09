"""A batch's table changes and totals written to Kafka as record batches, not message by message.

Faust writes each table change as its own message through its producer buffer: a future, a
sensor call, a partitioner call and a callback per key. When a batch changes thousands of user
records that was about a quarter of a worker's time (``python -m loadtest.processor_rate --profile``).
Here all of one batch's messages for a topic go out as one record batch per partition (aiokafka's
``create_batch`` / ``send_batch``), with one future per record batch.

Table changes keep Faust's contract with the table's store exactly: each change is filed in the
store in the order its message is appended, and the store is told each message's changelog
offset (base offset of its record batch + its index) when Kafka acknowledges it, as Faust's
``Table.on_key_set`` and ``Collection._on_changelog_sent`` do one key at a time. Every write to
these tables must come through here: the store matches acknowledgements to writes in send order
per partition.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka.structs import RecordMetadata
from faust.types import TP


Message = tuple[bytes, bytes | None]  # key, value (None: a tombstone)


def by_partition(messages: Iterable[Message], partition_of: Callable[[bytes], int]) -> dict[int, list[Message]]:
    """Messages grouped by partition, each group in the order given."""
    groups: dict[int, list[Message]] = {}
    for message in messages:
        groups.setdefault(partition_of(message[0]), []).append(message)
    return groups


async def send_in_batches(producer: Any, topic: str, partition: int, messages: list[Message],
                          on_acked: Callable[[int, int], None] | None = None) -> list[asyncio.Future]:
    """Send ``messages`` to one partition as few record batches as fit, in order.

    ``on_acked(first_offset, count)`` is called for each record batch Kafka acknowledges.
    Returns the batches' futures; a failed batch's future holds its error.
    """
    futures: list[asyncio.Future] = []
    index = 0
    while index < len(messages):
        builder = producer.create_batch()
        count = 0
        for key, value in messages[index:]:
            if builder.append(key=key, value=value, timestamp=None) is None:
                break
            count += 1
        if count == 0:
            raise ValueError(f"a message of {len(messages[index][1] or b'')} bytes does not fit a record batch of {topic}")
        builder.close()  # nothing sent by ``producer.send`` may join it: the offsets would shift
        future = await producer.send_batch(builder, topic, partition=partition)
        if on_acked is not None:
            future.add_done_callback(_acked_callback(on_acked, count))
        futures.append(future)
        index += count
    return futures


async def send_by_partition(producer: Any, topic: str, messages: Iterable[Message],
                            partition_of: Callable[[bytes], int]) -> list[asyncio.Future]:
    """Send ``messages`` to ``topic`` as record batches, each partition's in the order given."""
    futures: list[asyncio.Future] = []
    for partition, group in by_partition(messages, partition_of).items():
        futures += await send_in_batches(producer, topic, partition, group)
    return futures


def _acked_callback(on_acked: Callable[[int, int], None], count: int) -> Callable[[asyncio.Future], None]:
    def acked(future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # the agent awaits the future and stops on its error
        metadata: RecordMetadata = future.result()
        on_acked(metadata.offset, count)
    return acked


class TableWriter:
    """Writes a Faust table's changes: into its store, and to its changelog in record batches."""

    def __init__(self, table: Any, producer: Callable[[], Any], partition_of: Callable[[bytes], int]) -> None:
        self.table = table
        self.producer = producer
        self.partition_of = partition_of

    async def write(self, changes: Mapping[bytes, tuple[bytes, Any]]) -> list[asyncio.Future]:
        """``changes``: key -> (encoded value, decoded value). Returns the record batches' futures."""
        store = self.table.data
        put_encoded = getattr(store, "put_encoded", None)
        topic = self.table.changelog_topic_name
        groups = by_partition(((key, encoded) for key, (encoded, _) in changes.items()), self.partition_of)
        futures: list[asyncio.Future] = []
        for partition, messages in groups.items():
            # Filed in the store first, in send order; the store keeps them in memory until
            # Kafka acknowledges them (processor.state_store).
            for key, encoded in messages:
                if put_encoded is not None:
                    put_encoded(key, encoded)
                else:  # Faust's in-memory store keeps decoded values
                    store[key] = changes[key][1]
            tp = TP(topic, partition)

            def acked(first: int, count: int, tp: TP = tp) -> None:
                for offset in range(first, first + count):
                    store.set_persisted_offset(tp, offset)

            futures += await send_in_batches(self.producer(), topic, partition, messages, acked)
        return futures
