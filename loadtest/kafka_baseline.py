"""The bare consumer baseline for ingest: how fast a plain aiokafka consumer reads the same claps.

After an ingest run, one ``AIOKafkaConsumer`` (no group, all partitions assigned) reads the
``claps`` topic from the end offsets recorded before the run to those recorded after it, and
only parses each record's JSON to sum its ``count`` (taps). Its records/s is the ceiling a Python consumer of that topic
reaches on this machine, to compare with the processor's acked-and-counted rate.
"""
from __future__ import annotations

import asyncio
import time

import orjson
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def _stop(consumer: AIOKafkaConsumer) -> None:
    # aiokafka's stop() of a group-less consumer that was assigned partitions can raise the
    # CancelledError of its own internal "reset committed" task; that one is not ours to re-raise.
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster metadata
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            raise RuntimeError(f"topic {topic!r} has no partitions at {bootstrap}")
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await _stop(consumer)


async def consume_range(bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int],
                        timeout_s: float = 120.0) -> dict[str, Any]:
    """Read [start, end) of every partition as fast as one consumer can; records/s over the read."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
    await consumer.start()
    try:
        wanted = {p: end[p] for p in end if end[p] > start.get(p, 0)}
        partitions = [TopicPartition(topic, p) for p in wanted]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start.get(tp.partition, 0))
        total = sum(end[p] - start.get(p, 0) for p in wanted)
        read = claps = 0
        began = time.perf_counter()
        remaining = dict(wanted)
        while remaining and time.perf_counter() - began < timeout_s:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < remaining.get(tp.partition, -1):
                        read += 1
                        claps += orjson.loads(record.value).get("count", 0)  # taps in this clap message
                if records and records[-1].offset >= remaining.get(tp.partition, 0) - 1:
                    remaining.pop(tp.partition, None)
        seconds = time.perf_counter() - began
        return {"records": read, "expected": total, "claps": claps, "seconds": round(seconds, 3),
                "records_per_s": round(read / seconds, 1) if seconds > 0 else None,
                "claps_per_s": round(claps / seconds, 1) if seconds > 0 else None}
    finally:
        await _stop(consumer)
