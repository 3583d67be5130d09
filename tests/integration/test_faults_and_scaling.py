"""Scaling up and down, and crashes, while claps flow: totals stay exact, nothing acked is lost.

Each test drives a steady stream of clap batches from many users, changes the deployment in the
middle (a second gateway, a second processor worker, a kill -9), and then checks that every
reader and the Cassandra row hold exactly the total implied by the acknowledged claps.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.partitioning import partition_for_key
from tests.support.pipeline import cassandra_total, register_articles, running_pipeline, start_processor
from tests.support.clients import Reader, http_json, new_token, wait_all
from tests.support.processes import ServiceProcess, free_port

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def scaled(real_services, run_id, log_dir):
    with running_pipeline(run_id, "scale", log_dir) as started:
        yield started


class ClapDriver:
    """Many users clapping an article in small batches; remembers what was acknowledged."""

    def __init__(self, clappers: list[Reader], article: str) -> None:
        self.clappers = clappers
        self.article = article
        self.sent: dict[str, tuple[int, int]] = {}  # clap id -> (user index, count)

    @classmethod
    async def open(cls, base_url: str, ws_url: str, article: str, users: int) -> ClapDriver:
        return cls([await Reader.open(ws_url, new_token(base_url)) for _ in range(users)], article)

    async def run(self, rounds: int, pause_s: float) -> None:
        for round_no in range(rounds):
            for index, clapper in enumerate(self.clappers):
                clap_id = f"r{round_no}-u{index}"
                count = 1  # one clap per message: every message moves the total until the cap
                self.sent[clap_id] = (index, count)
                await clapper.clap(self.article, count, clap_id)
            await asyncio.sleep(pause_s)

    async def settle(self, timeout_s: float) -> None:
        """Wait for an answer (ack or error) to every clap sent."""
        def answered(index):
            return lambda r: all(
                cid in r.acks or any(e.get("id") == cid for e in r.errors)
                for cid, (i, _) in self.sent.items() if i == index
            )
        await asyncio.gather(*(c.wait_for(answered(i), timeout_s) for i, c in enumerate(self.clappers)))

    def planned_total(self) -> int:
        per_user = [0] * len(self.clappers)
        for index, count in self.sent.values():
            per_user[index] += count
        return sum(min(total, 50) for total in per_user)

    def acked_total(self) -> int:
        per_user = [0] * len(self.clappers)
        for clap_id, (index, count) in self.sent.items():
            if clap_id in self.clappers[index].acks:
                per_user[index] += count
        return sum(min(total, 50) for total in per_user)

    async def close(self) -> None:
        for clapper in self.clappers:
            await clapper.close()


async def converge(readers: list[Reader], article: str, expected: int, keyspace: str, timeout_s: float = 60) -> None:
    ok = await wait_all(readers, lambda r: r.totals.get(article) == expected, timeout_s)
    assert ok, f"expected {expected}; readers hold {sorted({r.totals.get(article) for r in readers}, key=str)}"
    assert all(r.out_of_order == 0 for r in readers)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (cassandra_total(keyspace, article) or (0,))[0] != expected:
        await asyncio.sleep(0.3)
    assert (cassandra_total(keyspace, article) or (0,))[0] == expected


async def test_a_second_gateway_serves_the_same_rooms_and_scales_back_down(scaled, log_dir):
    pipeline, extra = scaled
    port = free_port()
    second = ServiceProcess("scale-gateway-2", ["-m", "gateway"], {**pipeline.env, "PORT": str(port), "GATEWAY_NAME": "gateway-2"}, log_dir)
    extra.append(second)
    second.wait_for_http(f"http://127.0.0.1:{port}/healthz", 60)
    article = f"two-gw-{uuid.uuid4().hex[:6]}"
    await register_articles(pipeline, article, gateways=[pipeline.base_url, f"http://127.0.0.1:{port}"])
    on_first = await Reader.open_joined(pipeline.ws_url, article, 20)
    on_second = await Reader.open_joined(f"ws://127.0.0.1:{port}/ws", article, 20)
    # Claps arrive through the second gateway with a token issued by the first: one identity.
    driver = ClapDriver([await Reader.open(f"ws://127.0.0.1:{port}/ws", new_token(pipeline.base_url)) for _ in range(8)], article)
    await driver.run(rounds=5, pause_s=0.05)
    await driver.settle(20)
    await converge(on_first + on_second, article, driver.acked_total(), pipeline.keyspace)

    # Scale down: the second gateway goes away; its readers reconnect to the first and rejoin.
    second.stop()
    readers = await Reader.open_joined(pipeline.ws_url, article, 20)
    assert await wait_all(readers, lambda r: r.totals.get(article) == driver.acked_total(), 20)
    for client in on_first + readers:
        await client.close()
    await driver.close()


async def end_offset(bootstrap: str, topic: str, partition: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


class RowWatcher:
    """Polls an article's Cassandra row while a test runs and records every (seq, total) seen."""

    def __init__(self, keyspace: str, article: str) -> None:
        self.keyspace, self.article = keyspace, article
        self.seen: list[tuple[int, int]] = []
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            row = await asyncio.to_thread(cassandra_total, self.keyspace, self.article)
            if row is not None and (not self.seen or self.seen[-1] != (row[1], row[0])):
                self.seen.append((row[1], row[0]))
            await asyncio.sleep(0.2)

    async def stop(self) -> list[tuple[int, int]]:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.seen


async def clap_through(pipeline, name: str, disrupt, *, rounds: int, pause_s: float, timeout_s: float) -> int:
    """Clap steadily on a fresh article while ``disrupt()`` changes the deployment; then check
    that every clap was acked (Kafka is never disrupted here), that readers and Cassandra
    converge on exactly the planned total, and that neither ever went back. Returns the total."""
    article = f"{name}-{uuid.uuid4().hex[:6]}"
    await register_articles(pipeline, article)
    readers = await Reader.open_joined(pipeline.ws_url, article, 10)
    driver = await ClapDriver.open(pipeline.base_url, pipeline.ws_url, article, users=12)
    rows = RowWatcher(pipeline.keyspace, article)
    clapping = asyncio.create_task(driver.run(rounds=rounds, pause_s=pause_s))
    await asyncio.sleep(2)
    await disrupt()
    await clapping
    await driver.settle(30)
    assert [e for c in driver.clappers for e in c.errors] == []
    assert set().union(*(c.acks for c in driver.clappers)) == set(driver.sent)
    planned = driver.planned_total()
    assert driver.acked_total() == planned
    await converge(readers, article, planned, pipeline.keyspace, timeout_s=timeout_s)
    assert all(r.drops == 0 for r in readers)
    rest = http_json(f"{pipeline.base_url}/api/articles/{article}/claps")
    assert rest["total"] == planned
    history = await rows.stop()
    assert history == sorted(history), f"the Cassandra row went back: {history}"
    assert [t for _, t in history] == sorted(t for _, t in history)
    for reader in readers:
        await reader.close()
    await driver.close()
    return rest["total"]


async def test_processor_workers_scale_up_and_down_under_load_without_losing_a_clap(scaled, log_dir):
    pipeline, extra = scaled

    async def scale_up_then_down():
        worker_2 = start_processor(pipeline, "scale-processor-2", log_dir)
        extra.append(worker_2)
        await asyncio.to_thread(worker_2.wait_for_log, "Ready", 90)
        assert pipeline.env["CLAP_TOPIC"] in worker_2.log_text()  # the rebalance gave it clap partitions
        await asyncio.sleep(2)
        pipeline.processor.stop()  # back to one worker, mid-stream
        pipeline.processor = worker_2

    assert await clap_through(pipeline, "rebalance", scale_up_then_down, rounds=40, pause_s=0.25, timeout_s=90) == 12 * 40


async def test_kill_9_of_the_processor_and_the_projector_loses_nothing(scaled, log_dir):
    pipeline, extra = scaled

    async def crash_and_restart():
        pipeline.processor.kill()
        pipeline.projector.kill()
        await asyncio.sleep(1)  # claps keep being acked meanwhile: they wait in the durable log
        pipeline.processor = start_processor(pipeline, "scale-processor-3", log_dir)
        pipeline.projector = ServiceProcess("scale-projector-2", ["-m", "projector"], pipeline.env, log_dir)

    assert await clap_through(pipeline, "crash", crash_and_restart, rounds=30, pause_s=0.2, timeout_s=120) == 12 * 30


async def test_claps_a_delivery_skipped_mid_stream_or_at_its_end_are_read_again_and_counted(scaled, log_dir):
    """Faust can drop fetched records when a recovery ends (docs/RELIABILITY.md). A worker whose
    delivery skips five claps mid-stream and the last three (no later clap reveals those) still
    counts every clap exactly once: it seeks back to each hole on the real clap topic."""
    pipeline, extra = scaled
    article = f"holes-{uuid.uuid4().hex[:6]}"
    await register_articles(pipeline, article)
    pipeline.processor.stop()
    pipeline.processor = start_processor(pipeline, "holes-processor", log_dir, PROCESSOR_TEST_DROP_ONCE=f"{article}:10:5,{article}:37:3")
    await asyncio.to_thread(pipeline.processor.wait_for_log, "Ready", 90)
    partition = partition_for_key(article.encode(), int(pipeline.env["CLAP_PARTITIONS"]))
    first_offset = await end_offset(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.env["CLAP_TOPIC"], partition)
    readers = await Reader.open_joined(pipeline.ws_url, article, 5)
    driver = await ClapDriver.open(pipeline.base_url, pipeline.ws_url, article, users=8)
    await driver.run(rounds=5, pause_s=0.3)  # 40 claps, one per message, alone on the partition
    await driver.settle(30)
    assert set().union(*(c.acks for c in driver.clappers)) == set(driver.sent)
    await converge(readers, article, 40, pipeline.keyspace, timeout_s=60)
    log_text = pipeline.processor.log_text()
    holes = set(re.findall(rf"clap partition {partition} skipped from offset (\d+)", log_text))
    assert holes == {str(first_offset + 10), str(first_offset + 37)}
    for reader in readers:
        await reader.close()
    await driver.close()


async def test_only_the_owner_announces_while_workers_with_standbys_rebalance(scaled, log_dir):
    """Three rebalances under load with standby replicas: a worker holding a standby copy or a
    revoked partition never announces or stores a stale total (readers and the row never go back)."""
    pipeline, extra = scaled
    standby = {"PROCESSOR_STANDBY_REPLICAS": "1"}

    async def rebalance_three_times():
        second = start_processor(pipeline, "owner-processor-2", log_dir, **standby)
        extra.append(second)
        await asyncio.to_thread(second.wait_for_log, "Ready", 90)
        third = start_processor(pipeline, "owner-processor-3", log_dir, **standby)
        extra.append(third)
        await asyncio.to_thread(third.wait_for_log, "Ready", 90)
        second.stop()

    assert await clap_through(pipeline, "owner", rebalance_three_times, rounds=48, pause_s=0.25, timeout_s=120) == 12 * 48
