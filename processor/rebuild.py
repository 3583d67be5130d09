"""Rebuild every count from the clap log at a new epoch, while the service runs, and prove it.

    python -m processor.rebuild --epoch 2 [--workers 2] [--env-file .run/ha/deployment.env]
                                [--run-dir .run/ha] [--retire processor1,processor2] [--recount]

1. Takes the clap topic's end offsets (what "every count so far" means) and a snapshot of the
   live totals (Cassandra's rows), and starts following the fan-out topic from its end.
2. Starts ``--workers`` processor workers with ``CLAP_EPOCH=N`` (pid files in ``--run-dir``,
   logs in its ``logs/``). They read the log from offset 0 in a fresh consumer group and hold
   their totals back until they reach the log's end (``core.processing.ClapCounter``).
3. Shows progress from the new group's committed offsets (events replayed, rate, time left) and
   from the fan-out topic (live articles announced at the new epoch).
4. Once the group has committed past the end offsets taken in step 1, or every live article has
   a total at the new epoch (a partition announces only once it is read to its end), compares every rebuilt
   total with the live one, and lists every difference. A total's position is derived from
   the log (``seq`` = newest included offset + 1), so at an equal position a rebuilt total must
   equal the live one; where the positions differ, each total must equal a recount of the log
   with ``core.ledger`` at its own position. Replaying twice announces identical ``(seq, total)``
   rows. With ``--recount`` every rebuilt total is checked against the recount as well.
5. With ``--retire``, stops the named old-epoch workers (by recorded pid) and records the
   epoch in ``RUN_DIR/epoch`` (``deploy/local/ha.sh`` starts processors at it from then on).

Exits 0 when nothing differs, 1 when something does, 2 when the rebuild did not finish in time.
The new workers keep running either way: they are the counting service at the new epoch.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from core.ledger import ArticleTally, UserClaps
from core.messages import ClapRecorded, CountChanged, decode_fan_out
from core.partitioning import partition_for_key
from core.processing import apply_event
from processor.topics import ensure_changelog_topics
from processor.config import ProcessorConfig

REPO = Path(__file__).resolve().parents[1]
PROC_SH = REPO / "deploy" / "local" / "proc.sh"


@dataclass(frozen=True)
class Position:
    epoch: int
    seq: int
    total: int


def read_env_file(path: Path | None) -> dict[str, str]:
    """KEY=VALUE lines (as ``deploy/local/ha.sh env`` writes them); nothing for no path."""
    if path is None:
        return {}
    settings = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith("#"):
            settings[key.strip()] = value
    return settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


# -- the live side ---------------------------------------------------------------------------


def cassandra_snapshot(env: Mapping[str, str]) -> dict[str, Position]:
    """Every row of the totals table (QUORUM), as the live service shows it now."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.query import SimpleStatement

    profile = ExecutionProfile(consistency_level=ConsistencyLevel.QUORUM, request_timeout=30)
    cluster = Cluster(env.get("CASSANDRA_HOSTS", "127.0.0.1").split(","), port=int(env.get("CASSANDRA_PORT", "9042")),
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        session = cluster.connect()
        keyspace = env.get("CASSANDRA_KEYSPACE", "claps")
        query = SimpleStatement(f"SELECT article, total, seq, epoch FROM {keyspace}.article_totals", fetch_size=5000)
        return {row.article: Position(row.epoch, row.seq, row.total) for row in session.execute(query)}
    finally:
        cluster.shutdown()


class CountsFollower:
    """The fan-out topic from the end offsets of the moment it starts: the newest total per
    article of the new epoch, and of every older one (the live service)."""

    def __init__(self, bootstrap: str, topic: str, epoch: int) -> None:
        self.bootstrap, self.topic, self.epoch = bootstrap, topic, epoch
        self.rebuilt: dict[str, Position] = {}
        self.live: dict[str, Position] = {}
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        ends = await self.consumer.end_offsets(tps)
        for tp in tps:
            self.consumer.seek(tp, ends[tp])

    async def read_to_end(self, timeout_s: float = 60) -> None:
        """Everything published until now."""
        assert self.consumer is not None
        tps = list(self.consumer.assignment())
        ends = await self.consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any([await self.consumer.position(tp) < ends[tp] for tp in tps]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {self.topic} took over {timeout_s} s")
            for records in (await self.consumer.getmany(timeout_ms=200, max_records=20_000)).values():
                for record in records:
                    try:
                        update = decode_fan_out(record.value)
                    except (ValueError, KeyError, TypeError):
                        continue
                    if not isinstance(update, CountChanged):
                        continue  # a counting status
                    held = self.rebuilt if update.epoch == self.epoch else self.live if update.epoch < self.epoch else None
                    if held is None:
                        continue
                    old = held.get(update.article)
                    if old is None or (update.epoch, update.seq) > (old.epoch, old.seq):
                        held[update.article] = Position(update.epoch, update.seq, update.total)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


# -- progress --------------------------------------------------------------------------------


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = sorted(p["partition"] for p in described[0]["partitions"])
    if described[0]["error_code"] or not partitions:
        raise SystemExit(f"topic {topic!r} not found at {bootstrap}")
    return partitions


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    partitions = await topic_partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    offsets = await admin.list_consumer_group_offsets(group)
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


def replayed(done: Mapping[int, int], targets: Mapping[int, int]) -> int:
    return sum(min(done.get(p, 0), end) for p, end in targets.items())


# -- comparison ------------------------------------------------------------------------------


@dataclass
class Difference:
    article: str
    live: Position | None
    rebuilt: Position | None
    why: str

    def describe(self) -> str:
        def show(p: Position | None) -> str:
            return "none" if p is None else f"{p.total} at (epoch {p.epoch}, seq {p.seq})"
        return f"{self.article}: live {show(self.live)}, rebuilt {show(self.rebuilt)}: {self.why}"


@dataclass
class Comparison:
    identical: list[str]  # same seq, same total
    agreeing: list[str]  # different seqs, each total what the log counts at its own seq
    moving: list[str]  # different seqs, not (yet) checked against the log
    differences: list[Difference]


def compare(live: Mapping[str, Position], rebuilt: Mapping[str, Position],
            recounted: Mapping[tuple[str, int], int] | None = None) -> Comparison:
    """Classify every article of either side.

    Equal positions must carry equal totals (positions come from the log). Different positions
    happen while claps arrive, and also at rest: a clap that counted nothing (a repeated id, a
    user at the cap) moves no live announcement, while a rebuild announces each article once at
    its newest offset. Then each total is checked against the log's recount at its own position.
    With ``recounted`` ((article, seq) -> total), every rebuilt total is checked against it too.
    """
    result = Comparison([], [], [], [])
    for article in sorted(set(live) | set(rebuilt)):
        old, new = live.get(article), rebuilt.get(article)
        if old is None or new is None:
            result.differences.append(Difference(article, old, new, "only one side has it"))
            continue
        if recounted is not None and (article, new.seq) in recounted and recounted[(article, new.seq)] != new.total:
            result.differences.append(Difference(article, old, new, f"the log recounts {recounted[(article, new.seq)]}"))
        elif old.seq == new.seq:
            if old.total == new.total:
                result.identical.append(article)
            else:
                result.differences.append(Difference(article, old, new, "same position, different totals"))
        elif recounted is None or (article, old.seq) not in recounted:
            result.moving.append(article)
        elif recounted[(article, old.seq)] != old.total:
            result.differences.append(Difference(article, old, new, f"the live total: the log recounts {recounted[(article, old.seq)]}"))
        else:
            result.agreeing.append(article)
    return result


async def recount_at(bootstrap: str, topic: str, wanted: Mapping[str, set[int]], partitions: int) -> dict[tuple[str, int], int]:
    """(article, seq) -> the article's total by ``core.ledger`` over its log events below offset seq."""
    users: dict[tuple[str, str], UserClaps] = {}
    tallies: dict[str, ArticleTally] = {}
    pending = {article: sorted(seqs) for article, seqs in wanted.items() if seqs}
    found: dict[tuple[str, int], int] = {}
    read_to: dict[int, int] = {}
    for article, seqs in pending.items():
        p = partition_for_key(article.encode(), partitions)
        read_to[p] = max(read_to.get(p, 0), seqs[-1])

    def settle(article: str, below: int) -> None:
        """Record the current total for every wanted seq <= below (events past it not applied yet)."""
        seqs = pending.get(article)
        while seqs and seqs[0] <= below:
            found[(article, seqs.pop(0))] = tallies.get(article, ArticleTally()).total

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in read_to]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = set(tps)
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=500, max_records=20_000)).items():
                for record in records:
                    if record.offset >= read_to[tp.partition]:
                        continue
                    try:
                        clap = ClapRecorded.from_json(record.value)
                    except (ValueError, KeyError, TypeError):
                        continue
                    if clap.article not in pending:
                        continue
                    settle(clap.article, record.offset)  # seqs <= offset exclude this event
                    key = (clap.article, clap.user)
                    applied = apply_event(users.get(key, UserClaps()), tallies.get(clap.article, ArticleTally()),
                                          clap, record.offset)
                    users[key], tallies[clap.article] = applied.user, applied.article
            for tp in list(remaining):
                if await consumer.position(tp) >= read_to[tp.partition]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    for article in list(pending):
        settle(article, 2**62)
    return found


# -- the command -----------------------------------------------------------------------------


def start_workers(args: argparse.Namespace, env: dict[str, str]) -> list[str]:
    names = []
    for k in range(1, args.workers + 1):
        name = f"processor-e{args.epoch}-{k}"
        log_file = args.run_dir / "logs" / f"{name}.log"
        worker_env = [f"{key}={value}" for key, value in env.items()] + [
            f"CLAP_EPOCH={args.epoch}", f"PROCESSOR_WEB_PORT={free_port()}", f"PYTHONPATH={REPO}", "PYTHONUNBUFFERED=1"]
        subprocess.run(
            ["bash", str(PROC_SH), "start", name, str(log_file), "--", "env", *worker_env,
             sys.executable, "-m", "processor", "worker", "-l", "info"],
            env={**os.environ, "CLAP_RUN_DIR": str(args.run_dir)}, check=True,
        )
        names.append(name)
    return names


def stop_named(run_dir: Path, names: list[str]) -> None:
    for name in names:
        subprocess.run(["bash", str(PROC_SH), "stop", name], env={**os.environ, "CLAP_RUN_DIR": str(run_dir)}, check=False)


async def rebuild(args: argparse.Namespace) -> int:
    env = {**read_env_file(args.env_file), **{k: v for k, v in os.environ.items() if k in ProcessorEnv}}
    env.pop("CLAP_EPOCH", None)
    config = ProcessorConfig.from_env({**env, "CLAP_EPOCH": str(args.epoch)})
    targets = await end_offsets(config.kafka_bootstrap, config.clap_topic)
    total_events = sum(targets.values())
    snapshot = await asyncio.to_thread(cassandra_snapshot, env)
    stale = [a for a, p in snapshot.items() if p.epoch >= args.epoch]
    if stale:
        print(f"epoch {args.epoch} is not new: {len(stale)} rows are already at epoch >= {args.epoch} "
              f"(e.g. {stale[0]}); choose a higher one", file=sys.stderr)
        return 2
    follower = CountsFollower(config.kafka_bootstrap, config.counts_topic, args.epoch)
    await follower.start(len(targets))
    follower.live.update(snapshot)
    print(f"rebuild at epoch {args.epoch}: {total_events:,} clap events in {len(targets)} partitions of "
          f"{config.clap_topic!r}; {len(snapshot):,} live totals; group {config.app_id!r}", flush=True)
    await ensure_changelog_topics(config)
    began = time.monotonic()
    names = start_workers(args, env)
    print(f"started {', '.join(names)} (logs in {args.run_dir / 'logs'})", flush=True)
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    await admin.start()
    first_progress: tuple[float, int] | None = None
    try:
        deadline = began + args.timeout
        expected_articles = set(snapshot)
        while True:
            offsets = await committed(admin, config.app_id, config.clap_topic)
            done = replayed(offsets, targets)
            await follower.read_to_end()
            announced = len(expected_articles & follower.rebuilt.keys())
            now = time.monotonic()
            if done and first_progress is None:
                first_progress = (now, done)
            articles = f"{announced:,} / {len(expected_articles):,} articles announced at epoch {args.epoch}"
            if first_progress is not None and now > first_progress[0] and done > first_progress[1]:
                rate = (done - first_progress[1]) / (now - first_progress[0])
                left = f", about {fmt_duration((total_events - done) / rate)} left" if rate > 0 else ""
                print(f"  {done:,} / {total_events:,} events ({100 * done / max(total_events, 1):.1f}%) "
                      f"at {rate:,.0f} events/s{left}; {articles}", flush=True)
            else:
                print(f"  {done:,} / {total_events:,} events, workers starting; {articles}", flush=True)
            if done >= total_events:
                break
            # A partition is announced only once it is read to the end offsets of its assignment,
            # so every live article announced means the log is replayed, even where the group's
            # committed offsets lag behind (Faust was seen leaving one partition's commit behind).
            if expected_articles and announced == len(expected_articles):
                behind = {p: (offsets.get(p, 0), end) for p, end in targets.items() if offsets.get(p, 0) < end}
                print(f"  every live article is announced at epoch {args.epoch}; the group's committed offsets "
                      f"still lag on partitions (committed, end): {behind}", flush=True)
                break
            if now > deadline:
                print(f"the rebuild did not reach the end offsets in {args.timeout:.0f} s", file=sys.stderr)
                return 2
            await asyncio.sleep(args.progress_s)
        elapsed = time.monotonic() - began
        print(f"replayed {total_events:,} events in {elapsed:.1f} s ({total_events / elapsed:,.0f} events/s "
              f"including worker start-up)", flush=True)
        # Compare: read what both epochs announced; totals still moving get a few more looks,
        # then whatever still differs in position is settled by the log itself.
        settle_deadline = time.monotonic() + args.settle
        while True:
            await follower.read_to_end()
            outcome = compare(follower.live, follower.rebuilt)
            if not outcome.moving or time.monotonic() > settle_deadline:
                break
            await asyncio.sleep(1)
        wanted: dict[str, set[int]] = {a: {follower.live[a].seq, follower.rebuilt[a].seq} for a in outcome.moving}
        if args.recount:
            for article, position in follower.rebuilt.items():
                wanted.setdefault(article, set()).add(position.seq)
        if wanted:
            recounted = await recount_at(config.kafka_bootstrap, config.clap_topic, wanted, len(targets))
            outcome = compare(follower.live, follower.rebuilt, recounted)
        print(f"compared {len(set(follower.live) | set(follower.rebuilt)):,} articles: {len(outcome.identical):,} "
              f"identical (same seq, same total), {len(outcome.agreeing):,} at other positions but each equal to "
              f"the log's recount there, {len(outcome.differences)} different"
              + (" (every rebuilt total recounted from the log too)" if args.recount else ""))
        for difference in outcome.differences:
            print(f"  DIFFERENT {difference.describe()}")
        if outcome.differences:
            return 1
        if args.retire:
            stop_named(args.run_dir, args.retire)
            (args.run_dir / "epoch").write_text(f"{args.epoch}\n")
            print(f"retired {', '.join(args.retire)}; {args.run_dir / 'epoch'} now says {args.epoch}")
        return 0
    finally:
        await admin.close()
        await follower.stop()


# The processor's own settings, taken from the environment over the env file.
ProcessorEnv = {"KAFKA_BOOTSTRAP", "CLAP_TOPIC", "COUNTS_TOPIC", "CLAP_PARTITIONS", "KAFKA_RF", "CLAP_WINDOW_MS",
                "PROCESSOR_APP_PREFIX", "PROCESSOR_MAX_BATCH", "PROCESSOR_BATCH_WAIT_MS", "PROCESSOR_STANDBY_REPLICAS",
                "CASSANDRA_HOSTS", "CASSANDRA_PORT", "CASSANDRA_KEYSPACE"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processor.rebuild", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epoch", type=int, required=True, help="the new epoch (higher than every stored one)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--env-file", type=Path, default=None, help="KAFKA_BOOTSTRAP=... lines (ha.sh writes one)")
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get("CLAP_RUN_DIR", REPO / ".run")),
                        help="where the new workers' pid files and logs go")
    parser.add_argument("--retire", type=lambda s: [n for n in s.split(",") if n], default=[],
                        help="old-epoch workers to stop (by their pid files) once the rebuild matches")
    parser.add_argument("--recount", action="store_true", help="also recount the log with core.ledger")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--settle", type=float, default=30, help="seconds to wait for moving totals to meet")
    parser.add_argument("--progress-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    return asyncio.run(rebuild(args))


if __name__ == "__main__":
    sys.exit(main())
