"""How long a processor worker takes to count again after kill -9, against the size of its state.

    python -m loadtest.recovery [--sizes 50000,200000] [--stores memory,rocksdb] [--workers 1] [--bootstrap HOST:PORT]

Needs Kafka on 127.0.0.1:9092 (or --bootstrap). For every store and size, on fresh topics (12 partitions) and a
fresh state directory, it:

1. starts the worker(s) and waits for GET /ready;
2. writes N claps from N distinct users straight to the clap topic (aiokafka, keyed by article,
   the event JSON of ``core.messages.ClapRecorded``) and times them until every total on the
   fan-out topic is exact: the counting rate for new users (a new per-user record each);
3. writes min(N, --returning) more claps from the same users and times them the same way: the
   rate for returning users (a changed record each). The worker now holds N per-user records;
4. waits a few seconds (offsets committed, state written), kill -9s the first worker, at once
   writes one probe clap to an article of every partition (what a gateway acks meanwhile) and
   restarts the worker with the same web port and state directory, then times from the kill
   until every probe is counted, and until the restarted worker says ready;
5. writes one clap the moment it is ready and times it until counted (what a reader sees after
   ``make up`` returns);
6. with --workers 2, kill -9s the second worker and does not restart it: the time until the
   survivor counts probes on every partition (a takeover from its standby copy);
7. with --workers 2, starts the second worker again, waits until it is ready and stops it with
   SIGTERM, as a scale-down does: the time until the survivor counts probes on every partition;
8. checks that every total is exact.

The rates include the producer's own work on the same 2 cores, so they are lower bounds. It
prints one table row per store and size and writes every figure to
``loadtest/results/<timestamp>-recovery/result.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.messages import ClapRecorded, CountChanged, decode_fan_out
from core.partitioning import partition_for_key
from core.partitioning import article_partitioner
from processor.config import ProcessorConfig
from processor.topics import ensure_topics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
PARTITIONS = 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Worker:
    """One ``python -m processor worker``, restartable with the same port and state directory."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO), "PROCESSOR_WEB_PORT": str(self.port)}
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"==== start {time.strftime('%H:%M:%S')}\n")
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "processor", "worker", "-l", "info"], cwd=REPO, env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            )

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    async def wait_ready(self, timeout_s: float) -> float:
        """Seconds until GET /ready answers 200."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process and self.process.returncode}); see {self.log_path}")
            if await asyncio.to_thread(self.is_ready):
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready in {timeout_s} s; see {self.log_path}")

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()


class CountWatcher:
    """Follows the fan-out topic: the newest total of every article and when it arrived."""

    def __init__(self, topic: str, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
        self.totals: dict[str, int] = {}
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    update = decode_fan_out(record.value)
                    if not isinstance(update, CountChanged):
                        continue  # a counting status
                    self.totals[update.article] = update.total

    async def wait_until(self, done: Callable[[dict[str, int]], bool], timeout_s: float) -> float:
        """Seconds until ``done(totals)``, polled every 10 ms."""
        started = time.monotonic()
        while not done(self.totals):
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"totals not reached in {timeout_s} s")
            await asyncio.sleep(0.01)
        return time.monotonic() - started

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.consumer.stop()


class ClapWriter:
    """Writes clap events to the clap topic like a gateway does, and remembers the totals."""

    def __init__(self, topic: str, bootstrap: str) -> None:
        self.topic = topic
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=20, partitioner=article_partitioner, acks="all",
            enable_idempotence=True, max_batch_size=256 * 1024,
        )
        self.expected: dict[str, int] = {}
        self.written = 0

    async def write(self, claps: list[ClapRecorded]) -> None:
        chunk = 20_000  # bounds the futures held at once
        for start in range(0, len(claps), chunk):
            sends = []
            for clap in claps[start:start + chunk]:
                sends.append(await self.producer.send(self.topic, clap.to_json(), key=clap.article.encode()))
                self.expected[clap.article] = self.expected.get(clap.article, 0) + clap.count
            await asyncio.gather(*sends)
        self.written += len(claps)

    def exact(self, articles: list[str] | None = None) -> Callable[[dict[str, int]], bool]:
        wanted = {a: self.expected[a] for a in (articles or self.expected)}
        return lambda totals: all(totals.get(a) == n for a, n in wanted.items())


def one_article_per_partition(articles: list[str]) -> list[str]:
    chosen: dict[int, str] = {}
    for article in articles:
        chosen.setdefault(partition_for_key(article.encode(), PARTITIONS), article)
    assert len(chosen) == PARTITIONS, "too few articles to cover every partition"
    return [chosen[p] for p in sorted(chosen)]


def claps_from(users: range, articles: list[str], round_name: str) -> list[ClapRecorded]:
    now = int(time.time() * 1000)
    return [ClapRecorded(articles[u % len(articles)], f"u{u}", 1, f"{round_name}-{u}", now) for u in users]


async def probe(writer: ClapWriter, watcher: CountWatcher, articles: list[str], name: str, since: float, timeout_s: float) -> float:
    """Write one clap to each article; seconds from ``since`` until all of them are counted."""
    await writer.write([ClapRecorded(a, f"probe-{name}", 1, f"probe-{name}-{a}", int(time.time() * 1000)) for a in articles])
    await watcher.wait_until(writer.exact(articles), timeout_s)
    return time.monotonic() - since


async def run_case(
    store: str, size: int, workers: int, articles_n: int, returning: int, timeout_s: float, log_dir: Path, bootstrap: str
) -> dict:
    run = uuid.uuid4().hex[:6]
    state_dir = log_dir / f"state-{store}-{size}-{run}"
    env = {
        "KAFKA_BOOTSTRAP": bootstrap, "CLAP_TOPIC": f"recovery-{run}-claps", "COUNTS_TOPIC": f"recovery-{run}-counts",
        "CLAP_PARTITIONS": str(PARTITIONS), "PROCESSOR_APP_PREFIX": f"recovery-{run}", "PROCESSOR_STORE": store,
        "PROCESSOR_STATE_DIR": str(state_dir), "PROCESSOR_STANDBY_REPLICAS": "1" if workers > 1 else "0",
    }
    await ensure_topics(ProcessorConfig.from_env(env))
    articles = [f"art{i}" for i in range(articles_n)]
    probes = one_article_per_partition(articles)
    writer, watcher = ClapWriter(env["CLAP_TOPIC"], bootstrap), CountWatcher(env["COUNTS_TOPIC"], bootstrap)
    await writer.producer.start()
    await watcher.start()
    started = [Worker(f"{store}-{size}-w{i}", env, log_dir) for i in range(workers)]
    result: dict = {"store": store, "records": size, "workers": workers, "load_avg_at_start": round(os.getloadavg()[0], 1)}
    try:
        for worker in started:
            worker.start()
        for worker in started:
            await worker.wait_ready(timeout_s)
        print(f"  [{store} {size:,}] workers ready; writing {size:,} claps from new users", flush=True)

        t0 = time.monotonic()
        await writer.write(claps_from(range(size), articles, "new"))
        await watcher.wait_until(writer.exact(), timeout_s)
        result["new_users_per_s"] = round(size / (time.monotonic() - t0))
        print(f"  [{store} {size:,}] new users: {result['new_users_per_s']:,} claps/s", flush=True)

        again = min(size, returning)
        t0 = time.monotonic()
        await writer.write(claps_from(range(again), articles, "again"))
        await watcher.wait_until(writer.exact(), timeout_s)
        result["returning_users_per_s"] = round(again / (time.monotonic() - t0))
        print(f"  [{store} {size:,}] returning users: {result['returning_users_per_s']:,} claps/s", flush=True)

        await asyncio.sleep(6)  # offsets committed (every 2.8 s) and state written, as in steady running
        victim = started[0]
        killed_at = time.monotonic()
        victim.kill9()
        counted, ready = await asyncio.gather(  # a failed restart ends the wait at once
            probe(writer, watcher, probes, "restart", killed_at, timeout_s), restart_and_wait(victim, killed_at, timeout_s)
        )
        result["kill_to_counted_s"], result["kill_to_ready_s"] = round(counted, 2), round(ready, 2)
        print(f"  [{store} {size:,}] kill -9 + restart: counted again {result['kill_to_counted_s']} s after the kill", flush=True)

        ready_at = time.monotonic()
        result["first_clap_after_ready_s"] = round(await probe(writer, watcher, probes[:1], "ready", ready_at, timeout_s), 3)

        if workers > 1:
            survivor_from = time.monotonic()
            started[1].kill9()
            result["survivor_takeover_s"] = round(await probe(writer, watcher, probes, "survivor", survivor_from, timeout_s), 2)
            print(f"  [{store} {size:,}] survivor counts every partition {result['survivor_takeover_s']} s after the kill", flush=True)

            # A scale-down: the second worker back, then stopped on purpose.
            started[1].start()
            await started[1].wait_ready(timeout_s)
            await asyncio.sleep(6)  # offsets committed, the standbys caught up, as in steady running
            stopped_from = time.monotonic()
            takeover, exited = await asyncio.gather(  # claps arrive while it stops, as they would
                probe(writer, watcher, probes, "scale-down", stopped_from, timeout_s), timed_stop(started[1], stopped_from)
            )
            result["scale_down_takeover_s"], result["sigterm_stop_s"] = round(takeover, 2), round(exited, 2)
            print(f"  [{store} {size:,}] SIGTERM of a worker: it exited in {result['sigterm_stop_s']} s; the survivor counts"
                  f" every partition {result['scale_down_takeover_s']} s after the signal", flush=True)

        await watcher.wait_until(writer.exact(), timeout_s)
        result["exact"] = writer.exact()(watcher.totals)
        result["load_avg_at_end"] = round(os.getloadavg()[0], 1)
    finally:
        for worker in started:
            worker.stop()
        await watcher.stop()
        await writer.producer.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    return result


async def restart_and_wait(worker: Worker, killed_at: float, timeout_s: float) -> float:
    worker.start()
    await worker.wait_ready(timeout_s)
    return time.monotonic() - killed_at


async def timed_stop(worker: Worker, since: float) -> float:
    """SIGTERM (SIGKILL after 30 s); seconds from ``since`` until the worker exited."""
    await asyncio.to_thread(worker.stop)
    return time.monotonic() - since


def tables(results: list[dict]) -> str:
    """Recovery against state size, the stores side by side; then the counting rates."""
    stores = sorted({r["store"] for r in results})
    by_size: dict[int, dict[str, dict]] = {}
    for r in results:
        by_size.setdefault(r["records"], {})[r["store"]] = r
    measures = [("kill_to_counted_s", "kill → every partition counts again (s)"), ("kill_to_ready_s", "kill → /ready (s)"),
                ("first_clap_after_ready_s", "clap at /ready → counted (s)")]
    if any(r["workers"] > 1 for r in results):
        measures.append(("survivor_takeover_s", "kill, no restart → survivor counts all (s)"))
        measures.append(("scale_down_takeover_s", "SIGTERM, no restart → survivor counts all (s)"))
    header = ["per-user records"] + [f"{label}, {s}" for key, label in measures for s in stores]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for size in sorted(by_size):
        row = [f"{size:,}"] + [str(by_size[size].get(s, {}).get(key, "–")) for key, _ in measures for s in stores]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| per-user records | store | new users (claps/s) | returning users (claps/s) | load average (start–end) |",
              "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['records']:,} | {r['store']} | {r.get('new_users_per_s', 0):,} | {r.get('returning_users_per_s', 0):,}"
                     f" | {r.get('load_avg_at_start')}–{r.get('load_avg_at_end')} |")
    return "\n".join(lines)


async def main(
    sizes: list[int], stores: list[str], workers: int, articles: int, returning: int, timeout_s: float, bootstrap: str
) -> int:
    # SIGTERM stops the run like Ctrl-C: the workers it started are stopped on the way out.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    out = REPO / "loadtest" / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-recovery"
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for size in sizes:
        for store in stores:
            results.append(await run_case(store, size, workers, articles, returning, timeout_s, out, bootstrap))
            (out / "result.json").write_text(json.dumps(results, indent=2))
    print(f"\nworkers: {workers}; results and worker logs in {out}\n")
    print(tables(results))
    exact = all(r["exact"] for r in results)
    print(f"\nevery total exact: {exact}")
    return 0 if exact else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50000,200000", help="per-user records in state, comma-separated")
    parser.add_argument("--stores", default="memory,rocksdb")
    parser.add_argument("--workers", type=int, default=1, choices=(1, 2))
    parser.add_argument("--articles", type=int, default=100)
    parser.add_argument("--returning", type=int, default=50_000, help="claps from returning users (at most the state size)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds any one wait may take")
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP, help="the Kafka to run against")
    options = parser.parse_args()
    sys.exit(asyncio.run(main(
        [int(s) for s in options.sizes.split(",")], options.stores.split(","), options.workers, options.articles, options.returning, options.timeout,
        options.bootstrap,
    )))
