"""How fast one processor worker counts a backlog of claps, end to end through Kafka and Faust.

    python -m loadtest.processor_rate [--articles 100] [--users 1500]

Needs Kafka on 127.0.0.1:9092 (`bash deploy/local/services.sh up kafka`). It writes
articles x users clap events (every user claps once on every article, so every event changes
one per-user record, the worst case for state writes) to fresh topics, starts one
`python -m processor worker`, and times it until every article's total on the fan-out topic is
exact. The rate includes the worker's start-up (a few seconds), so it is a lower bound.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.messages import ClapRecorded, CountChanged
from gateway.kafka_adapters import article_partitioner
from processor.config import ProcessorConfig
from processor.topics import ensure_topics

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = "127.0.0.1:9092"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def produce_backlog(topic: str, articles: int, users: int) -> dict[str, int]:
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, linger_ms=5, partitioner=article_partitioner, acks="all", enable_idempotence=True
    )
    await producer.start()
    expected: dict[str, int] = {}
    sends = []
    for user in range(users):
        for index in range(articles):
            article, count = f"art{index}", 1 + (user + index) % 5
            expected[article] = expected.get(article, 0) + count
            clap = ClapRecorded(article, f"u{user}", count, f"{user}-{index}", 0)
            sends.append(await producer.send(topic, clap.to_json(), key=article.encode()))
    await asyncio.gather(*sends)
    await producer.stop()
    return expected


async def main(articles: int, users: int, timeout_s: float) -> int:
    run = uuid.uuid4().hex[:6]
    env = {"CLAP_TOPIC": f"rate-{run}-claps", "COUNTS_TOPIC": f"rate-{run}-counts", "CLAP_PARTITIONS": "12",
           "PROCESSOR_APP_PREFIX": f"rate-{run}", "PROCESSOR_WEB_PORT": str(free_port()), "KAFKA_BOOTSTRAP": BOOTSTRAP}
    await ensure_topics(ProcessorConfig.from_env(env))
    expected = await produce_backlog(env["CLAP_TOPIC"], articles, users)
    events = articles * users
    print(f"backlog: {events:,} clap events on {articles} articles", flush=True)
    consumer = AIOKafkaConsumer(env["COUNTS_TOPIC"], bootstrap_servers=BOOTSTRAP, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    log_path = Path(f"/tmp/processor-rate-{run}.log")
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "processor", "worker", "-l", "warn"], cwd=REPO,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT,
        )
        started = time.monotonic()
        totals: dict[str, int] = {}
        try:
            while totals != expected and time.monotonic() - started < timeout_s and worker.poll() is None:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        update = CountChanged.from_json(record.value)
                        totals[update.article] = update.total
            elapsed = time.monotonic() - started
        finally:
            worker.terminate()
            worker.wait(30)
            await consumer.stop()
    exact = totals == expected
    print(f"exact totals: {exact}; {elapsed:.1f} s from worker start to the last exact total;"
          f" {events / elapsed:,.0f} clap events/s (worker log: {log_path})")
    return 0 if exact else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=100)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--timeout", type=float, default=300)
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.articles, options.users, options.timeout)))
