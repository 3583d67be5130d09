"""One fixture per port, parametrised over both adapters: the contract suites run against each."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer

from core.messages import ClapRecorded
from core.ports import ClapLog, CounterStore, CountFeed

BOOTSTRAP = "127.0.0.1:9092"


async def create_topic(name: str, partitions: int = 3) -> None:
    from processor.config import ProcessorConfig
    from processor.topics import ensure_topics

    # Every name its own: the defaults are the local deployment's (`make up`), whose changelogs a
    # 3-partition test topic set would otherwise create first, with the wrong count.
    await ensure_topics(ProcessorConfig(
        kafka_bootstrap=BOOTSTRAP, clap_topic=name, counts_topic=f"{name}-counts", partitions=partitions,
        app_prefix=name, articles_topic=f"{name}-articles", presence_topic=f"{name}-presence"))


@dataclass
class LogUnderTest:
    log: ClapLog
    read_back: Callable[[int], Awaitable[list[ClapRecorded]]]


async def _read_kafka(topic: str, expected: int) -> list[ClapRecorded]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    events: list[ClapRecorded] = []
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while len(events) < expected and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                events.extend(ClapRecorded.from_json(r.value) for r in records)
    finally:
        await consumer.stop()
    return events


@pytest.fixture(params=["embedded", "distributed"])
async def clap_log(request, tmp_path) -> AsyncIterator[LogUnderTest]:
    if request.param == "embedded":
        from embedded.file_log import FileClapLog

        log = FileClapLog(tmp_path / "claps.log")

        async def read_back(expected: int) -> list[ClapRecorded]:
            return [event async for _, event in log.read(0)]

        yield LogUnderTest(log, read_back)
    else:
        request.getfixturevalue("real_services")
        from gateway.kafka_adapters import KafkaClapLog

        topic = f"contract-claps-{uuid.uuid4().hex[:8]}"
        await create_topic(topic)
        log = KafkaClapLog(BOOTSTRAP, topic)
        await log.start()
        yield LogUnderTest(log, lambda expected: _read_kafka(topic, expected))
    await log.close()


@pytest.fixture(params=["embedded", "distributed"])
async def count_feed(request) -> AsyncIterator[CountFeed]:
    if request.param == "embedded":
        from embedded.feed import InMemoryCountFeed

        feed: CountFeed = InMemoryCountFeed()
    else:
        request.getfixturevalue("real_services")
        from gateway.kafka_adapters import KafkaCountFeed

        topic = f"contract-counts-{uuid.uuid4().hex[:8]}"
        await create_topic(topic)
        feed = KafkaCountFeed(BOOTSTRAP, topic)
    yield feed
    await feed.close()


@pytest.fixture(params=["embedded", "distributed"])
async def counter_store(request, tmp_path) -> AsyncIterator[CounterStore]:
    if request.param == "embedded":
        from embedded.sqlite_store import SqliteCounterStore

        store: CounterStore = SqliteCounterStore(tmp_path / "counts.sqlite3")
    else:
        request.getfixturevalue("real_services")
        from projector.cassandra_store import CassandraCounterStore

        store = CassandraCounterStore(["127.0.0.1"], 9042, f"contract_{uuid.uuid4().hex[:8]}")
        await store.start()
    yield store
    await store.close()
