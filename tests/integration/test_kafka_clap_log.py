"""The Kafka clap log's appends against a real broker: straight into the producer's batches once
the topic's partitions are known, and through a waiting task when a partition's batch is full."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from core.messages import ClapRecorded
from gateway.kafka_adapters import KafkaClapLog
from tests.contract.conftest import BOOTSTRAP, _read_kafka, create_topic

pytestmark = pytest.mark.services


def _claps(article: str, count: int, tag: str) -> list[ClapRecorded]:
    return [ClapRecorded(article, f"u{i % 7}", 1, f"{tag}-{i}", i) for i in range(count)]


async def _started_log(**options) -> tuple[KafkaClapLog, str]:
    topic = f"append-claps-{uuid.uuid4().hex[:8]}"
    await create_topic(topic)
    log = KafkaClapLog(BOOTSTRAP, topic, **options)
    await log.start()
    return log, topic


def _tasks_started_by(append_all) -> tuple[list[asyncio.Future[int]], int]:
    before = asyncio.all_tasks()
    appends = append_all()
    return appends, len(asyncio.all_tasks() - before)


async def test_once_the_partitions_are_known_appends_need_no_task_and_keep_their_order(real_services):
    log, topic = await _started_log()
    try:
        first = await log.append(ClapRecorded("hot", "u0", 1, "first", 0))  # learns the partitions
        claps = _claps("hot", 300, "fast")
        appends, tasks = _tasks_started_by(lambda: [log.append(clap) for clap in claps])
        offsets = await asyncio.gather(*appends)
        assert tasks == 0
        assert offsets == list(range(first + 1, first + 301))
        logged = await _read_kafka(topic, 301)
        assert [event.clap_id for event in logged] == ["first"] + [clap.clap_id for clap in claps]
    finally:
        await log.close()


async def test_a_full_batch_makes_appends_wait_and_every_one_lands_once(real_services):
    # A 1 KiB batch holds a handful of claps: most of 300 appended in one turn find it full.
    log, topic = await _started_log(max_batch_bytes=1024)
    try:
        first = await log.append(ClapRecorded("hot", "u0", 1, "first", 0))
        claps = _claps("hot", 300, "full")
        appends, tasks = _tasks_started_by(lambda: [log.append(clap) for clap in claps])
        offsets = await asyncio.gather(*appends)
        assert tasks > 0  # the waiting path was taken
        assert sorted(offsets) == list(range(first + 1, first + 301))
        logged = await _read_kafka(topic, 301)
        assert sorted(event.clap_id for event in logged) == sorted(["first"] + [clap.clap_id for clap in claps])
    finally:
        await log.close()


async def test_a_waiting_append_that_is_cancelled_is_not_logged_and_the_rest_are(real_services):
    log, topic = await _started_log(max_batch_bytes=1024)
    try:
        await log.append(ClapRecorded("hot", "u0", 1, "first", 0))
        claps = _claps("hot", 100, "cancel")
        appends = [log.append(clap) for clap in claps]
        waiting = [index for index, append in enumerate(appends) if isinstance(append, asyncio.Task)]
        assert waiting  # the batch filled within this turn
        given_up = waiting[-1]
        await asyncio.sleep(0)  # the waiting task has handed its wait on to the loop
        appends[given_up].cancel()
        outcomes = await asyncio.gather(*appends, return_exceptions=True)
        assert isinstance(outcomes[given_up], asyncio.CancelledError)
        kept = [clap.clap_id for index, clap in enumerate(claps) if index != given_up]
        logged = await _read_kafka(topic, 100)
        assert sorted(event.clap_id for event in logged) == sorted(["first", *kept])
    finally:
        await log.close()


async def test_the_append_cost_tool_times_both_ways_against_the_broker(real_services):
    from loadtest.append_cost import measure

    results = await measure(BOOTSTRAP, claps=400, rounds=1)
    assert list(results) == ["send() in a task per clap", "KafkaClapLog.append"]
    assert all(0 < result["median_cpu_us_per_append"] < 100_000 for result in results.values())
