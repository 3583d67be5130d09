"""`python -m processor.rebuild` (what `make rebuild EPOCH=N` runs) while the service is live:
it rebuilds every total at the new epoch, finds no difference with the live totals or with a
recount of the log, and a second rebuild writes identical rows (same seq, same total)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import pytest

from core.messages import ClapRecorded
from gateway.kafka_adapters import KafkaClapLog
from tests.support.pipeline import running_pipeline
from tests.support.processes import REPO

pytestmark = [pytest.mark.services, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def live(real_services, run_id, log_dir):
    with running_pipeline(run_id, "rebuild", log_dir) as started:
        yield started


def rows(keyspace: str) -> dict[str, tuple[int, int, int]]:
    """article -> (epoch, seq, total) for every row of the run's keyspace."""
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=9042)
    try:
        session = cluster.connect()
        return {r.article: (r.epoch, r.seq, r.total)
                for r in session.execute(f"SELECT article, epoch, seq, total FROM {keyspace}.article_totals")}
    finally:
        cluster.shutdown()


async def wait_rows(keyspace: str, predicate, timeout_s: float) -> dict[str, tuple[int, int, int]]:
    deadline = time.monotonic() + timeout_s
    while True:
        current = await asyncio.to_thread(rows, keyspace)
        if predicate(current) or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.5)


async def newest_offsets(bootstrap: str, topic: str) -> dict[str, int]:
    """article -> the offset of its newest event in the clap topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]  # CLAP_PARTITIONS of the test pipeline
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        last_read = {tp: -1 for tp in tps}
        newest: dict[str, int] = {}
        deadline = time.monotonic() + 60
        # Read until the last record of every partition has arrived (bounded in time).
        while any(last_read[tp] < ends[tp] - 1 for tp in tps) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    newest[record.key.decode()] = record.offset
                    last_read[tp] = record.offset
        return newest
    finally:
        await consumer.stop()


def rebuild(pipeline, epoch: int, run_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, **pipeline.env, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "processor.rebuild", "--epoch", str(epoch), "--run-dir", str(run_dir), "--recount",
         "--progress-s", "1", "--timeout", "240"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )


def stop_workers(run_dir) -> None:
    for pid_file in run_dir.glob("processor-e*.pid"):
        subprocess.run(["bash", str(REPO / "deploy/local/proc.sh"), "stop", pid_file.stem],
                       env={**os.environ, "CLAP_RUN_DIR": str(run_dir)}, capture_output=True)


async def test_a_live_rebuild_matches_the_live_totals_and_a_second_one_writes_identical_rows(live, log_dir):
    pipeline, _ = live
    tag = uuid.uuid4().hex[:6]
    articles = [f"rb-{tag}-{i}" for i in range(5)]
    expected = {}
    log = KafkaClapLog(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.env["CLAP_TOPIC"])
    await log.start()
    try:
        for a, article in enumerate(articles):
            for user in range(6):
                for batch in range(4):
                    await log.append(ClapRecorded(article, f"u{user}", 1 + (a + user + batch) % 5 * 3, f"{article}-{user}-{batch}", 1))
                await log.append(ClapRecorded(article, f"u{user}", 4, f"{article}-{user}-0", 2))  # a retry: counts once
            expected[article] = sum(min(sum(1 + (a + u + b) % 5 * 3 for b in range(4)), 50) for u in range(6))
    finally:
        await log.close()
    first = await wait_rows(pipeline.keyspace, lambda r: {a: r.get(a, (0, 0, 0))[2] for a in articles} == expected, 60)
    assert {a: first[a][2] for a in articles} == expected
    assert {first[a][0] for a in articles} == {1}

    run_dir = log_dir / "rebuild-run"
    try:
        second = rebuild(pipeline, 2, run_dir)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "0 different (every rebuilt total recounted from the log too)" in second.stdout
        assert "events/s" in second.stdout
        at_2 = await wait_rows(pipeline.keyspace, lambda r: all(r[a][0] == 2 for a in articles), 30)
        # A rebuild announces each article once, at its newest offset + 1 (the live service may
        # sit lower: a last clap that counted nothing, here a retry, announces nothing).
        newest = await newest_offsets(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.env["CLAP_TOPIC"])
        assert {a: at_2[a] for a in articles} == {a: (2, newest[a] + 1, expected[a]) for a in articles}

        third = rebuild(pipeline, 3, run_dir)
        assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
        assert "compared 5 articles: 5 identical (same seq, same total)" in third.stdout
        at_3 = await wait_rows(pipeline.keyspace, lambda r: all(r[a][0] == 3 for a in articles), 30)
        # Replaying twice: the same (seq, total) in every row, only the epoch differs.
        assert {a: at_3[a][1:] for a in articles} == {a: at_2[a][1:] for a in articles}

        refused = rebuild(pipeline, 3, run_dir)
        assert refused.returncode == 2 and "is not new" in refused.stderr
    finally:
        stop_workers(run_dir)
