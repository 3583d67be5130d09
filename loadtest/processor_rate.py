"""How fast one processor worker counts a backlog of claps, end to end through Kafka and Faust.

    python -m loadtest.processor_rate [--articles 100] [--users 1500] [--profile 10]

Needs Kafka on 127.0.0.1:9092 (`bash deploy/local/services.sh up kafka`). It writes
articles x users clap events (every user claps once on every article, so every event changes
one per-user record, the worst case for state writes) to fresh topics, starts one
`python -m processor worker`, and times it until every article's total on the fan-out topic is
exact. The first rate includes the worker's start-up (a few seconds), so it is a lower bound;
the second counts from the worker's Ready (its tables restored, its partitions assigned) to the
last exact total: the fetching and counting alone.
It also prints the worker's garbage-collection pauses of the whole run (its /metrics).
With --profile N, py-spy samples the worker for N seconds once it counts, and the tool prints
where its time goes.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from core.messages import CountChanged, decode_fan_out
from core.partitioning import article_partitioner
from loadtest.core_rate import backlog, expected_totals
from processor.config import ProcessorConfig
from processor.topics import ensure_topics

REPO = Path(__file__).resolve().parents[1]
PY_SPY = Path(sys.executable).with_name("py-spy")

# Where a worker's samples go, by the first matching frame of a stack (checked in this order).
PROFILE_PARTS = (
    ("changelog and totals sends (record batches; Faust's producer)",
     ("processor/bulk_send.py", "send_changelog", "ProducerBuffer", "Producer.send", "publish_message")),
    ("the counting loop's own work (decode, core.apply, records, acks)", ("processor/app.py", "core/")),
    ("waiting (event loop select)", ("EpollSelector.select",)),
    # Every stack runs under faust's worker entry point, so this one must come last.
    ("Faust's fetch and per-message delivery (processor/intake.py's part included)", ("faust/",)),
)
BOOTSTRAP = "127.0.0.1:9092"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def produce_backlog(topic: str, articles: int, users: int, claps_per_user: int = 1) -> dict[str, int]:
    """Writes ``loadtest.core_rate.backlog`` to ``topic``; returns each article's exact total."""
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, linger_ms=5, partitioner=article_partitioner, acks="all", enable_idempotence=True
    )
    await producer.start()
    claps = list(backlog(articles, users, claps_per_user))
    sends = [await producer.send(topic, clap.to_json(), key=clap.article.encode()) for clap in claps]
    await asyncio.gather(*sends)
    await producer.stop()
    return expected_totals(claps)


def summarize_profile(path: Path) -> list[tuple[str, float]]:
    """Share of py-spy samples per part of PROFILE_PARTS (raw format: 'frame;frame;... count')."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        samples = int(number)
        total += samples
        part = next((name for name, needles in PROFILE_PARTS if any(n in stack for n in needles)), "other")
        counts[part] = counts.get(part, 0) + samples
    return sorted(((name, n / total) for name, n in counts.items()), key=lambda item: -item[1]) if total else []


def collector_pauses(metrics_text: str) -> dict[str, tuple[int, float]]:
    """Generation -> (collections, seconds paused in all), from a worker's /metrics page."""
    found: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "processor_gc_pause_seconds":
            continue
        for sample in family.samples:
            slot = {"processor_gc_pause_seconds_count": 0, "processor_gc_pause_seconds_sum": 1}.get(sample.name)
            if slot is not None:
                found.setdefault(sample.labels["generation"], [0, 0.0])[slot] = sample.value
    return {generation: (int(count), seconds) for generation, (count, seconds) in sorted(found.items())}


async def read_worker_metrics(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    try:
        return await asyncio.to_thread(get)
    except OSError as error:
        return f"# not read: {error!r}"


async def delete_run_topics(prefix: str) -> None:
    """This run's topics (backlog, totals, changelogs) go: each run writes hundreds of MB."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.delete_topics([name for name in await admin.list_topics() if name.startswith(prefix + "-")])
    finally:
        await admin.close()


async def main(articles: int, users: int, timeout_s: float, profile_s: int, claps_per_user: int = 1) -> int:
    run = uuid.uuid4().hex[:6]
    state_dir = tempfile.mkdtemp(prefix=f"processor-rate-{run}-")
    env = {"PROCESSOR_STATE_DIR": state_dir, "CLAP_TOPIC": f"rate-{run}-claps", "COUNTS_TOPIC": f"rate-{run}-counts", "CLAP_PARTITIONS": "12",
           "PROCESSOR_APP_PREFIX": f"rate-{run}", "PROCESSOR_WEB_PORT": str(free_port()), "KAFKA_BOOTSTRAP": BOOTSTRAP}
    await ensure_topics(ProcessorConfig.from_env(env))
    expected = await produce_backlog(env["CLAP_TOPIC"], articles, users, claps_per_user)
    events = articles * users * claps_per_user
    print(f"backlog: {events:,} clap events on {articles} articles", flush=True)
    consumer = AIOKafkaConsumer(env["COUNTS_TOPIC"], bootstrap_servers=BOOTSTRAP, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    log_path = Path(f"/tmp/processor-rate-{run}.log")
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "processor", "worker", "-l", "info"], cwd=REPO,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT,
        )
        started = time.monotonic()
        profile_path = Path(f"/tmp/processor-rate-{run}.prof")
        profiler = None
        if profile_s:
            # Wait until the worker counts (its log says Ready), then sample it.
            while "Ready" not in log_path.read_text() and worker.poll() is None:
                await asyncio.sleep(0.2)
            profiler = subprocess.Popen(
                [str(PY_SPY), "record", "-d", str(profile_s), "-f", "raw", "-o", str(profile_path), "--pid", str(worker.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        totals: dict[str, int] = {}
        ready_at = None
        try:
            while totals != expected and time.monotonic() - started < timeout_s and worker.poll() is None:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        update = decode_fan_out(record.value)
                        if not isinstance(update, CountChanged):
                            continue  # a counting status
                        totals[update.article] = update.total
                if ready_at is None and "Ready" in log_path.read_text():
                    ready_at = time.monotonic()  # within a poll (0.2 s) of the worker's own Ready
            elapsed = time.monotonic() - started
            pauses = collector_pauses(await read_worker_metrics(int(env["PROCESSOR_WEB_PORT"])))
        finally:
            if profiler is not None:
                profiler.wait(profile_s + 30)
            worker.terminate()
            worker.wait(30)
            await consumer.stop()
            shutil.rmtree(state_dir, ignore_errors=True)
            await delete_run_topics(f"rate-{run}")
    exact = totals == expected
    # The largest resident set of any child waited for: the worker's (py-spy's is far smaller).
    peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"exact totals: {exact}; {elapsed:.1f} s from worker start to the last exact total;"
          f" {events / elapsed:,.0f} clap events/s; worker peak RSS {peak_rss_mib:,.0f} MiB (worker log: {log_path})")
    if pauses:
        print("garbage collection, whole run: " + "; ".join(
            f"generation {generation}: {count:,} collections, {seconds:.2f} s" for generation, (count, seconds) in pauses.items()))
    if exact and ready_at is not None:
        counting_s = started + elapsed - ready_at
        print(f"counting: {counting_s:.1f} s from the worker's Ready ({ready_at - started:.1f} s after start)"
              f" to the last exact total: {events / counting_s:,.0f} clap events/s")
    if profile_s and profile_path.exists():
        print(f"where the worker's time goes ({profile_s} s of py-spy samples, {profile_path}):")
        for name, share in summarize_profile(profile_path):
            print(f"  {share:6.1%}  {name}")
    return 0 if exact else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=100)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--claps-per-user", type=int, default=1,
                        help="each user claps this many times on each article, count 1 each (default: once, 1-5)")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS", help="py-spy the worker this long")
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.articles, options.users, options.timeout, options.profile,
                              options.claps_per_user)))
