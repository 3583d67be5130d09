"""One viral article: how fast one processor worker counts claps that all land in one partition.

    python -m loadtest.hot_article [--events 30000] [--spreads 1,100]

Needs Kafka on 127.0.0.1:9092. For each spread (the number of articles the same number of clap
events is spread over) it writes a backlog to fresh topics as ``loadtest.processor_rate`` does
(every event from another user, so every event changes its own per-user record), starts one
``python -m processor worker``, and from the moment the worker logs "Ready" until every total on
the fan-out topic is exact it measures the wall time and the worker's CPU seconds
(/proc/<pid>/stat). Events per CPU-second is what one dedicated core would count: on a shared
machine the wall-clock rate says more about the neighbours than about the worker.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from core.messages import CountChanged, decode_fan_out
from loadtest.processor_rate import BOOTSTRAP, REPO, free_port, produce_backlog
from loadtest.procmon import cpu_seconds
from processor.config import ProcessorConfig
from processor.topics import ensure_topics


async def measure(articles: int, events: int, timeout_s: float) -> dict:
    run = uuid.uuid4().hex[:6]
    env = {"CLAP_TOPIC": f"hot-{run}-claps", "COUNTS_TOPIC": f"hot-{run}-counts", "CLAP_PARTITIONS": "12",
           "PROCESSOR_APP_PREFIX": f"hot-{run}", "PROCESSOR_WEB_PORT": str(free_port()), "KAFKA_BOOTSTRAP": BOOTSTRAP}
    await ensure_topics(ProcessorConfig.from_env(env))
    expected = await produce_backlog(env["CLAP_TOPIC"], articles, events // articles)
    consumer = AIOKafkaConsumer(env["COUNTS_TOPIC"], bootstrap_servers=BOOTSTRAP, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    log_path = Path(f"/tmp/hot-article-{run}.log")
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "processor", "worker", "-l", "info"], cwd=REPO,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while "Ready" not in log_path.read_text() and worker.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            cpu0, t0 = cpu_seconds(worker.pid), time.monotonic()
            totals: dict[str, int] = {}
            while totals != expected and time.monotonic() < deadline and worker.poll() is None:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        update = decode_fan_out(record.value)
                        if not isinstance(update, CountChanged):
                            continue  # a counting status
                        totals[update.article] = update.total
            cpu1, t1 = cpu_seconds(worker.pid), time.monotonic()
        finally:
            worker.terminate()
            worker.wait(30)
            await consumer.stop()
    count = articles * (events // articles)
    return {"articles": articles, "events": count, "exact": totals == expected, "wall_s": t1 - t0,
            "cpu_s": cpu1 - cpu0, "events_per_s": count / (t1 - t0), "events_per_cpu_s": count / (cpu1 - cpu0),
            "log": str(log_path)}


async def main(events: int, spreads: list[int], timeout_s: float) -> int:
    print("| articles | clap events | exact | wall s from Ready | worker CPU s | events/s (wall) | **events per CPU-second** |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for articles in spreads:
        r = await measure(articles, events, timeout_s)
        ok &= r["exact"]
        print(f"| {r['articles']} | {r['events']:,} | {'✅' if r['exact'] else '❌'} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
              f"| {r['events_per_s']:,.0f} | **{r['events_per_cpu_s']:,.0f}** |", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--spreads", default="1,100", help="comma-separated article counts")
    parser.add_argument("--timeout", type=float, default=600)
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.events, [int(s) for s in options.spreads.split(",")], options.timeout)))
