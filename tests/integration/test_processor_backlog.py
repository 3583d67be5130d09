"""A rebalance that comes while a worker's intake is full of backlog loses and repeats nothing,
and stalls nobody (processor/intake.py: the fetch loop waits on a full intake inside itself, and
a rebalance clears the intake and drops a delivery that was waiting for room)."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer

from core.messages import CountChanged, decode_fan_out
from loadtest.processor_rate import produce_backlog
from processor.config import ProcessorConfig
from processor.topics import ensure_topics
from tests.support.pipeline import pipeline_env, start_processor
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.services

BOOTSTRAP = "127.0.0.1:9092"
# 240,000 events, written before the workers start, so that they are far behind when the rebalance
# comes however fast they count. (Written while they counted, 120,000 were not enough once the
# intake made a worker about twice as fast: 22,180 claps were left once.)
ARTICLES, USERS = 40, 6000
# Smaller than the workers' own (processor/config.py), so that the intakes are certainly full:
# the fetch loop then waits on each delivery, which is the case under test.
STREAM_BUFFER = 4096


class Totals:
    """Every total announced on the fan-out topic, read from its start."""

    def __init__(self, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=None, auto_offset_reset="earliest")
        self.latest: dict[str, CountChanged] = {}
        self.went_back: list[tuple[str, int, int]] = []

    async def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    update = decode_fan_out(record.value)
                    if isinstance(update, CountChanged):
                        self.take(update)

    def take(self, update: CountChanged) -> None:
        before = self.latest.get(update.article)
        if before is not None and (update.seq < before.seq or update.total < before.total):
            # A new owner may announce a total again; it never announces an older one.
            self.went_back.append((update.article, before.total, update.total))
        if before is None or update.seq >= before.seq:
            self.latest[update.article] = update

    def totals(self) -> dict[str, int]:
        return {article: update.total for article, update in self.latest.items()}


async def test_a_rebalance_while_the_stream_buffer_is_full_counts_every_clap_once(run_id, log_dir, real_services):
    env = pipeline_env(run_id, "backlog")
    await ensure_topics(ProcessorConfig.from_env(env))
    pipeline = type("Env", (), {"env": env})  # start_processor needs only the environment
    workers: list[ServiceProcess] = []
    totals = Totals(env["COUNTS_TOPIC"])
    await totals.consumer.start()
    try:
        expected = await produce_backlog(env["CLAP_TOPIC"], ARTICLES, USERS)  # counts of 1 to 5
        workers = [start_processor(pipeline, f"backlog-worker-{n}", log_dir, PROCESSOR_INSTANCE_ID=f"backlog-{n}",
                                   PROCESSOR_STREAM_BUFFER=str(STREAM_BUFFER))
                   for n in (1, 2)]
        for worker in workers:
            await asyncio.to_thread(worker.wait_for_log, "Ready", 90)
        staying, leaving = workers
        await asyncio.sleep(3)
        assert env["CLAP_TOPIC"] in leaving.log_text()  # its assignment: the leaver holds clap partitions
        await totals.read_for(0.5)
        behind = sum(expected.values()) - sum(totals.totals().values())
        # Events average 3 claps: far more events left than both intakes hold, so the fetch
        # loops wait on full intakes now.
        assert behind > 3 * 2 * STREAM_BUFFER, f"only {behind} claps left; the backlog was counted before the rebalance"
        leaving.stop()  # a clean stop leaves the group at once: the rebalance comes now, and
        # the staying worker's partitions and the leaver's are all counted by the staying one
        deadline = time.monotonic() + 120
        while totals.totals() != expected and time.monotonic() < deadline:
            await totals.read_for(1)
        assert totals.totals() == expected
        assert totals.went_back == []
        for worker in workers:
            assert "Drain messages raised" not in worker.log_text()
            assert "Traceback" not in worker.log_text()
    finally:
        await totals.consumer.stop()
        for worker in workers:
            worker.stop()
