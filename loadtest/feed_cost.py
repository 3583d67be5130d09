"""What reading the fan-out topic costs one gateway, with and without routing by shard.

    python -m loadtest.feed_cost [--articles 10000] [--rate 1.0] [--partitions 12] [--gateways 10]
                                 [--warmup 5] [--duration 30] [--cases all-all,share-all,share-followed]

Needs Kafka on 127.0.0.1:9092. It creates a fresh fan-out topic of ``--partitions`` partitions
and starts a publisher process that writes totals for ``--articles`` articles, each ``--rate``
times a second, keyed by article with the processor's partitioner (so 10,000 articles at 1/s is
10,000 totals/s: the platform's long tail, docs/BENCHMARKS.md "Capacity planning"). Then, one
case at a time, it starts one gateway-feed process: the gateway's real feed adapter and real
``RoomRegistry`` with one reader per room (a socket that discards bytes: the frames to readers
are the same fleet-wide whatever the routing, and ``loadtest fanout`` measures them), consuming
as ``Gateway._consume_feed`` does. Its CPU comes from /proc/<pid>/stat over ``--duration``
seconds after ``--warmup``.

Cases, named rooms-feed:
- ``all-all``: rooms on every article, the feed reads every partition: each gateway today, once
  readers are spread at random over enough gateways that every one has readers of every article.
- ``share-all``: rooms only on the articles whose shard's home is this gateway (readers routed
  by shard over ``--gateways`` gateways), but the feed still reads every partition.
- ``share-followed``: the same rooms, and the feed reads only their partitions (gateway.feed).
- ``all-followed``: rooms everywhere with the new feed: it must cost what ``all-all`` costs.

The measured gateway is the one (of ``--gateways``) that is home to the most shards: the worst share.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from core.messages import CountChanged
from core.routing import shard_of, shards_homed_at
from loadtest.procmon import cpu_seconds, machine_jiffies, machine_shares

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = "127.0.0.1:9092"
CASES = ("all-all", "share-all", "share-followed", "all-followed")
TICK_S = 0.1


def article_ids(count: int) -> list[str]:
    return [f"fc{i:06d}" for i in range(count)]


def gateway_names(count: int) -> list[str]:
    return [f"gw-{i}" for i in range(count)]


def widest_share(gateways: int, partitions: int) -> tuple[str, frozenset[int]]:
    """The gateway home to the most shards (ties: the first), and those shards."""
    names = gateway_names(gateways)
    homed = {g: shards_homed_at(g, names, partitions) for g in names}
    name = max(names, key=lambda g: (len(homed[g]), -names.index(g)))
    return name, homed[name]


# -- the publisher process ----------------------------------------------------------------------


async def publish(topic: str, articles: int, rate: float, partitions: int, seconds: float) -> None:
    """Totals for every article, ``rate`` a second each, spread evenly over 100 ms ticks."""
    ids = article_ids(articles)
    shard = {a: shard_of(a, partitions) for a in ids}
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks=1, linger_ms=5)
    await producer.start()
    seq: dict[str, int] = defaultdict(int)
    per_tick = articles * rate * TICK_S
    owed = 0.0
    cursor = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    tick = 0
    try:
        while loop.time() - start < seconds:
            owed += per_tick
            by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
            while owed >= 1:
                owed -= 1
                article = ids[cursor % articles]
                cursor += 1
                seq[article] += 1
                update = CountChanged(article, seq[article] * 3, 3, seq[article], 1, int(time.time() * 1000))
                by_partition[shard[article]].append((article.encode(), update.to_json()))
            sends = []
            for partition, records in by_partition.items():
                batch = producer.create_batch()
                for key, value in records:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        sends.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None)
                sends.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*sends)
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * TICK_S - loop.time()))
    finally:
        await producer.stop()


# -- the gateway-feed process -------------------------------------------------------------------


class DiscardingSocket:
    """A reader's transport that takes every frame and keeps none."""

    def write(self, data: bytes) -> None:
        return None

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


async def run_gateway_feed(topic: str, rooms_on: list[str], feed_kind: str, out: Path) -> None:
    from gateway.feed import PartitionedCountFeed
    from gateway.kafka_adapters import KafkaCountFeed
    from gateway.rooms import Reader, RoomRegistry

    feed = PartitionedCountFeed(BOOTSTRAP, topic) if feed_kind == "followed" else KafkaCountFeed(BOOTSTRAP, topic)
    rooms = RoomRegistry(on_open=feed.follow, on_close=feed.unfollow)
    updates = await feed.subscribe()
    for article in rooms_on:
        rooms.join(Reader(DiscardingSocket()), article)
    for article in rooms_on:
        await feed.followed(article)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    received = 0
    per_second: dict[int, int] = defaultdict(int)  # CLOCK_MONOTONIC second -> totals from the feed

    async def consume() -> None:
        nonlocal received
        async for update in updates:  # what Gateway._consume_feed does
            received += 1
            per_second[int(time.monotonic())] += 1
            await rooms.publish(update)

    # Records the consumer took off the topic, per second: the sum of its positions. Both feeds
    # keep their consumer in ``_consumers`` (a benchmark may look inside).
    kafka = feed._consumers[0]
    positions: dict[int, int] = {}

    async def sample_positions() -> None:
        while True:
            total = 0
            for tp in kafka.assignment():
                try:
                    total += await kafka.position(tp)
                except Exception:  # a partition unassigned between the two calls
                    pass
            positions[int(time.monotonic())] = total
            await asyncio.sleep(1 - time.monotonic() % 1)

    print("ready", flush=True)
    consumer = asyncio.create_task(consume())
    sampler = asyncio.create_task(sample_positions())
    await asyncio.wait([consumer, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    consumer.cancel()
    sampler.cancel()
    out.write_text(json.dumps({
        "totals_from_feed": received,
        "totals_per_second": per_second,
        "positions": positions,
        "frames_to_rooms": rooms.frames_written,
        "records_read": getattr(feed, "records_read", None),
        "partitions_read": sorted(getattr(feed, "following", ())) or "all",
    }))
    await feed.close()


# -- the orchestrator ---------------------------------------------------------------------------


async def create_topic(name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


def spawn(args: list[str], log: Path, niceness: int = 0) -> subprocess.Popen:
    with open(log, "w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "loadtest.feed_cost", *args], cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=sink, text=True,
            preexec_fn=(lambda: os.nice(niceness)) if niceness else None,
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def measure_case(case: str, topic: str, options: argparse.Namespace, share: list[str], workdir: Path) -> dict:
    rooms_kind, feed_kind = case.split("-")
    rooms_on = article_ids(options.articles) if rooms_kind == "all" else share
    rooms_file = workdir / f"{case}.rooms"
    rooms_file.write_text("\n".join(rooms_on))
    out = workdir / f"{case}.json"
    process = spawn(["gateway", "--topic", topic, "--rooms-file", str(rooms_file), "--feed", feed_kind, "--out", str(out)],
                    workdir / f"{case}.log")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the rooms are open and their partitions pinned
        if line.strip() != "ready":
            raise RuntimeError(f"{case}: gateway-feed process did not start; see {workdir / (case + '.log')}")
        time.sleep(options.warmup)
        cpu0, machine0, t0 = cpu_seconds(process.pid), machine_jiffies(), time.monotonic()
        samples = []
        for _ in range(int(options.duration)):
            c, t = cpu_seconds(process.pid), time.monotonic()
            time.sleep(1)
            samples.append((cpu_seconds(process.pid) - c) / (time.monotonic() - t))
        cpu1, machine1, t1 = cpu_seconds(process.pid), machine_jiffies(), time.monotonic()
    finally:
        stop(process)
    stats = json.loads(out.read_text()) if out.exists() else {}
    per_second = {int(k): v for k, v in stats.pop("totals_per_second", {}).items()}
    window = [per_second.get(second, 0) for second in range(int(t0) + 1, int(t1))]
    positions = {int(k): v for k, v in stats.pop("positions", {}).items()}
    first, last = int(t0) + 1, int(t1) - 1  # whole seconds inside the CPU window
    read = positions.get(last, 0) - positions.get(first, 0) if first in positions and last in positions else None
    cpu_in_window = (cpu1 - cpu0) * (last - first) / (t1 - t0)
    return {
        "case": case,
        "rooms": len(rooms_on),
        "cpu_cores": (cpu1 - cpu0) / (t1 - t0),
        "cpu_cores_p5_p95": [statistics.quantiles(samples, n=20)[0], statistics.quantiles(samples, n=20)[-1]],
        "machine_busy": machine_shares(machine0, machine1)["busy"],
        "totals_from_feed_per_s": statistics.median(window) if window else 0,
        "records_read_per_s": read / (last - first) if read is not None else None,
        "cpu_us_per_record": cpu_in_window / read * 1e6 if read else None,
        **stats,
    }


def orchestrate(options: argparse.Namespace) -> int:
    run = uuid.uuid4().hex[:6]
    topic = f"feedcost-{run}"
    workdir = REPO / "loadtest" / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-feedcost"
    workdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(create_topic(topic, options.partitions))
    home, shards = widest_share(options.gateways, options.partitions)
    share = [a for a in article_ids(options.articles) if shard_of(a, options.partitions) in shards]
    cases = options.cases.split(",")
    per_case = options.warmup + options.duration + 15
    publisher = spawn(["publish", "--topic", topic, "--articles", str(options.articles), "--rate", str(options.rate),
                       "--partitions", str(options.partitions), "--seconds", str(per_case * len(cases) + 10)],
                      workdir / "publisher.log", niceness=10)  # the measured process goes first
    results = []
    try:
        time.sleep(3)
        for case in cases:
            if case not in CASES:
                raise SystemExit(f"unknown case {case!r}; one of {CASES}")
            result = measure_case(case, topic, options, share, workdir)
            results.append(result)
            print(json.dumps(result), flush=True)
        publisher_cpu = cpu_seconds(publisher.pid) if publisher.poll() is None else None
    finally:
        stop(publisher)
    summary = {
        "topic": topic, "articles": options.articles, "rate_per_article": options.rate,
        "totals_per_s": options.articles * options.rate, "partitions": options.partitions,
        "gateways": options.gateways, "measured_gateway": home, "its_shards": sorted(shards),
        "its_articles": len(share), "publisher_cpu_s": publisher_cpu, "cases": results,
    }
    (workdir / "result.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{options.articles:,} articles × {options.rate}/s = {options.articles * options.rate:,.0f} totals/s on "
          f"{options.partitions} partitions; {home} of {options.gateways} gateways is home to {len(shards)} "
          f"shard(s) {sorted(shards)}: {len(share):,} articles")
    print("| case | rooms | partitions read | records read /s | totals handled /s (median) | gateway CPU, cores (p5..p95 of 1 s samples) | CPU µs per record read | machine busy |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        parts = r.get("partitions_read")
        parts = "all" if parts == "all" else len(parts)
        per_record = f"{r['cpu_us_per_record']:.1f}" if r.get("cpu_us_per_record") else "–"
        read = f"{r['records_read_per_s']:,.0f}" if r.get("records_read_per_s") is not None else "–"
        print(f"| {r['case']} | {r['rooms']:,} | {parts} | {read} | {r['totals_from_feed_per_s']:,.0f} "
              f"| **{r['cpu_cores']:.3f}** ({r['cpu_cores_p5_p95'][0]:.3f}..{r['cpu_cores_p5_p95'][1]:.3f}) | {per_record} "
              f"| {r['machine_busy']:.2f} |")
    print(f"results: {workdir}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    pub = sub.add_parser("publish")
    pub.add_argument("--topic", required=True)
    pub.add_argument("--articles", type=int, required=True)
    pub.add_argument("--rate", type=float, required=True)
    pub.add_argument("--partitions", type=int, required=True)
    pub.add_argument("--seconds", type=float, required=True)
    gw = sub.add_parser("gateway")
    gw.add_argument("--topic", required=True)
    gw.add_argument("--rooms-file", type=Path, required=True)
    gw.add_argument("--feed", choices=("all", "followed"), required=True)
    gw.add_argument("--out", type=Path, required=True)
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1.0, help="totals per second per article")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--cases", default="all-all,share-all,share-followed")
    options = parser.parse_args()
    if options.role == "publish":
        asyncio.run(publish(options.topic, options.articles, options.rate, options.partitions, options.seconds))
        return 0
    if options.role == "gateway":
        rooms_on = [a for a in options.rooms_file.read_text().split("\n") if a]
        asyncio.run(run_gateway_feed(options.topic, rooms_on, options.feed, options.out))
        return 0
    return orchestrate(options)


if __name__ == "__main__":
    sys.exit(main())
