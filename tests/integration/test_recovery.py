"""A worker's recovery: kill -9 at the worst moment, restarts from its own disk or from the
changelog alone, a standby taking over, and GET /ready. Real Kafka, real Faust workers; claps are
written straight to the clap topic (as a gateway does) and totals read from the fan-out topic.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from core.ledger import MAX_CLAPS_PER_USER
from core.messages import ClapRecorded, CountChanged, decode_fan_out
from core.partitioning import article_partitioner, partition_for_key
from processor.config import ProcessorConfig
from processor.state_store import CRASH_AFTER_LOCAL_WRITE_ENV
from processor.topics import ensure_topics
from tests.support.pipeline import pipeline_env
from tests.support.processes import ServiceProcess, free_port

pytestmark = pytest.mark.services

BOOTSTRAP = "127.0.0.1:9092"


class ClapLog:
    """The clap topic as the gateways write it, and the totals every clap implies."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, partitioner=article_partitioner, acks="all")
        self.counted: dict[tuple[str, str], int] = {}  # (article, user) -> claps counted
        self.ids: set[tuple[str, str, str]] = set()

    async def write(self, claps: list[ClapRecorded]) -> None:
        for clap in claps:
            await self.producer.send_and_wait(self.topic, clap.to_json(), key=clap.article.encode())
            # The rules, stated independently of core.ledger: a clap id counts once, a user at most 50.
            if (clap.article, clap.user, clap.clap_id) not in self.ids:
                self.ids.add((clap.article, clap.user, clap.clap_id))
                held = self.counted.get((clap.article, clap.user), 0)
                self.counted[(clap.article, clap.user)] = min(MAX_CLAPS_PER_USER, held + clap.count)

    def expected(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for (article, _), n in self.counted.items():
            totals[article] = totals.get(article, 0) + n
        return totals


class Totals:
    """The fan-out topic: the newest total per article, and the highest one ever announced."""

    def __init__(self, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=None, auto_offset_reset="earliest")
        self.newest: dict[str, int] = {}
        self.highest: dict[str, int] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    update = decode_fan_out(record.value)
                    if not isinstance(update, CountChanged):
                        continue  # a counting status
                    self.newest[update.article] = update.total
                    self.highest[update.article] = max(update.total, self.highest.get(update.article, 0))

    async def wait_for(self, expected: dict[str, int], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while {a: self.newest.get(a) for a in expected} != expected:
            assert time.monotonic() < deadline, f"totals {self.newest} never reached {expected}"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.consumer.stop()


class Cluster:
    """Fresh topics, and processor workers each with a fixed web port and state directory."""

    def __init__(self, run_id: str, name: str, log_dir: Path, **env: str) -> None:
        self.env = {**pipeline_env(run_id, name), **env}
        self.log_dir = log_dir
        self.name = name
        self.claps = ClapLog(self.env["CLAP_TOPIC"])
        self.totals = Totals(self.env["COUNTS_TOPIC"])
        self.running: list[ServiceProcess] = []

    async def __aenter__(self) -> Cluster:
        await ensure_topics(ProcessorConfig.from_env(self.env))
        await self.claps.producer.start()
        await self.totals.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for worker in self.running:
            worker.stop()
        await self.totals.stop()
        await self.claps.producer.stop()

    def worker_env(self, port: int, state: str, **env: str) -> dict[str, str]:
        return {**self.env, "PROCESSOR_WEB_PORT": str(port), "PROCESSOR_STATE_DIR": str(self.log_dir / f"{self.name}-{state}"), **env}

    def start(self, label: str, port: int, state: str, **env: str) -> ServiceProcess:
        worker = ServiceProcess(f"{self.name}-{label}", ["-m", "processor", "worker", "-l", "info"], self.worker_env(port, state, **env), self.log_dir)
        self.running.append(worker)
        return worker

    def articles(self, count: int) -> list[str]:
        """Article ids, one per partition while there are partitions left."""
        partitions = int(self.env["CLAP_PARTITIONS"])
        chosen: dict[int, str] = {}
        index = 0
        while len(chosen) < min(count, partitions):
            article = f"{self.name}-a{index}"
            chosen.setdefault(partition_for_key(article.encode(), partitions), article)
            index += 1
        return list(chosen.values())


def clap(article: str, user: str, count: int, clap_id: str) -> ClapRecorded:
    return ClapRecorded(article, user, count, clap_id, int(time.time() * 1000))


def ready_status(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def wait_ready(worker: ServiceProcess, port: int, timeout_s: float) -> list[int]:
    """Poll GET /ready until 200; returns every status seen on the way."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.process.poll() is None, f"{worker.name} exited:\n{worker.log_text()[-3000:]}"
        try:
            status, _ = await asyncio.to_thread(ready_status, port)
        except OSError:
            status = 0  # web server not up yet
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == 200:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"{worker.name} never ready; statuses {seen}:\n{worker.log_text()[-3000:]}")


async def wait_exit(worker: ServiceProcess, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while worker.process.poll() is None:
        assert time.monotonic() < deadline, f"{worker.name} did not exit:\n{worker.log_text()[-3000:]}"
        await asyncio.sleep(0.05)
    return worker.process.returncode


async def test_a_worker_killed_between_its_store_write_and_the_changelog_write_counts_every_clap_once(run_id, log_dir, real_services):
    async with Cluster(run_id, "crashwrite", log_dir) as cluster:
        articles = cluster.articles(3)
        users = [f"u{i}" for i in range(12)]
        port = free_port()
        # Batch A: every user claps every article; u0 reaches the cap of 50.
        await cluster.claps.write(
            [clap(a, u, 30 if u == "u0" else 1 + i % 5, f"A-{a}-{u}") for a in articles for i, u in enumerate(users)]
        )
        worker = cluster.start("w1", port, "disk")
        await wait_ready(worker, port, 90)
        await cluster.totals.wait_for(cluster.claps.expected(), 60)
        await asyncio.sleep(4)  # offsets committed, state on disk
        worker.stop()

        # Batch B: more from everyone (u0 over the cap), new users, and a client retry of one id.
        await cluster.claps.write(
            [clap(a, u, 25 if u == "u0" else 3, f"B-{a}-{u}") for a in articles for u in users]
            + [clap(a, f"new{i}", 7, f"B-{a}-new{i}") for a in articles for i in range(5)]
            + [clap(articles[0], "u1", 3, f"B-{articles[0]}-u1")]
        )
        marker = log_dir / f"crashwrite-{run_id}.marker"
        crashing = cluster.start("w1-crash", port, "disk", **{CRASH_AFTER_LOCAL_WRITE_ENV: str(marker)})
        assert await wait_exit(crashing, 90) == 70, crashing.log_text()[-3000:]
        assert marker.exists()

        # The same worker again, on its own disk: every clap counted once.
        restarted = cluster.start("w1-again", port, "disk")
        await wait_ready(restarted, port, 90)
        await cluster.totals.wait_for(cluster.claps.expected(), 60)
        await asyncio.sleep(4)
        restarted.stop()

        # A worker with no disk state at all restores from the changelog alone: it must hold
        # batch B too. Retries of B's ids and claps past the cap must count nothing.
        fresh = cluster.start("w2-fresh", port, "empty")
        await wait_ready(fresh, port, 90)
        await cluster.claps.write(
            [clap(a, u, 4, f"B-{a}-{u}") for a in articles for u in users]  # retries: same ids
            + [clap(a, "u0", 5, f"C-{a}-u0") for a in articles]  # u0 is at the cap
            + [clap(a, "new0", 2, f"C-{a}-new0") for a in articles]  # counts
        )
        expected = cluster.claps.expected()
        await cluster.totals.wait_for(expected, 60)
        await asyncio.sleep(2)  # nothing more arrives
        assert {a: cluster.totals.newest[a] for a in articles} == expected
        assert {a: cluster.totals.highest[a] for a in articles} == expected, "a total above the exact one was announced"


async def test_a_restarted_worker_replays_only_the_changelog_written_since(run_id, log_dir, real_services):
    async with Cluster(run_id, "restart", log_dir) as cluster:
        articles = cluster.articles(4)
        port = free_port()
        worker = cluster.start("w1", port, "disk")
        await wait_ready(worker, port, 90)
        await cluster.claps.write([clap(a, f"u{i}", 1, f"A-{a}-{i}") for a in articles for i in range(300)])
        await cluster.totals.wait_for(cluster.claps.expected(), 60)
        await asyncio.sleep(4)  # offsets committed, state on disk
        worker.kill()

        await cluster.claps.write([clap(a, "after-kill", 2, f"K-{a}") for a in articles])
        restarted = cluster.start("w1-again", port, "disk")
        await wait_ready(restarted, port, 90)
        await cluster.totals.wait_for(cluster.claps.expected(), 60)
        replayed, written = changelog_replay(restarted.log_text())
        assert written >= 4 * 300  # a changelog record for every user record of batch A
        assert replayed <= written // 10, f"replayed {replayed} of {written} changelog records"


async def test_a_standby_takes_over_a_killed_workers_partitions_without_a_full_replay(run_id, log_dir, real_services):
    async with Cluster(run_id, "standby", log_dir, PROCESSOR_STANDBY_REPLICAS="1") as cluster:
        articles = cluster.articles(4)
        ports = [free_port(), free_port()]
        workers = [cluster.start(f"w{i}", port, f"disk{i}") for i, port in enumerate(ports)]
        for worker, port in zip(workers, ports):
            await wait_ready(worker, port, 90)
        await cluster.claps.write([clap(a, f"u{i}", 1 + i % 3, f"A-{a}-{i}") for a in articles for i in range(300)])
        await cluster.totals.wait_for(cluster.claps.expected(), 60)
        await asyncio.sleep(4)  # offsets committed; the standbys have caught up
        mark = len(workers[0].log_text())
        workers[1].kill()

        await cluster.claps.write([clap(a, "after-kill", 2, f"K-{a}") for a in articles])
        await cluster.totals.wait_for(cluster.claps.expected(), 60)
        assert workers[0].process.poll() is None
        replayed, written = changelog_replay(workers[0].log_text()[mark:])
        # The survivor's last recovery covers every partition: the killed worker's too.
        assert written >= 4 * 300, "the survivor never took over the killed worker's partitions"
        assert replayed <= written // 10, f"replayed {replayed} of {written} changelog records"


async def group_members(group: str, instance_ids: list[str]) -> list[str]:
    """A consumer group's members as its coordinator knows them now: the instance id of each
    static member (Kafka names one ``<instance id>-<uuid>``), the member id of any other."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [described] = response.groups
    error_code, members = described[0], described[5]
    assert error_code == 0, described
    return sorted(next((i for i in instance_ids if m[0].startswith(f"{i}-")), m[0]) for m in members)


async def test_a_worker_stopped_on_purpose_leaves_its_group_at_once_and_a_killed_one_keeps_its_place(run_id, log_dir, real_services):
    # A session timeout far longer than anything below waits: only a leave takes a member out in time.
    async with Cluster(run_id, "leave", log_dir, PROCESSOR_STANDBY_REPLICAS="1", PROCESSOR_SESSION_TIMEOUT_S="60") as cluster:
        group = ProcessorConfig.from_env(cluster.env).app_id
        articles = cluster.articles(4)
        ports = [free_port(), free_port()]
        ids = [ProcessorConfig.from_env(cluster.worker_env(port, "x")).group_instance_id for port in ports]
        workers = [cluster.start(f"w{i}", port, f"disk{i}") for i, port in enumerate(ports)]
        for worker, port in zip(workers, ports):
            await wait_ready(worker, port, 90)
        await cluster.claps.write([clap(a, f"u{i}", 1, f"A-{a}-{i}") for a in articles for i in range(50)])
        await cluster.totals.wait_for(cluster.claps.expected(), 60)
        assert await group_members(group, ids) == sorted(ids)

        # SIGTERM, as a scale-down sends: the worker leaves as it exits, and the survivor counts.
        assert workers[1].stop() == 0, workers[1].log_text()[-3000:]
        assert await group_members(group, ids) == [ids[0]]
        assert f"left consumer group {group} as static member {ids[1]}" in workers[1].log_text()
        await cluster.claps.write([clap(a, "after-stop", 2, f"S-{a}") for a in articles])
        await cluster.totals.wait_for(cluster.claps.expected(), 60)

        # kill -9 sends nothing: the member keeps its place for its restart.
        again = cluster.start("w1-again", ports[1], "disk1")
        await wait_ready(again, ports[1], 90)
        assert await group_members(group, ids) == sorted(ids)
        again.kill()
        assert await group_members(group, ids) == sorted(ids)
        restarted = cluster.start("w1-restarted", ports[1], "disk1")
        await wait_ready(restarted, ports[1], 90)
        assert await group_members(group, ids) == sorted(ids)
        await cluster.claps.write([clap(a, "after-kill", 3, f"K-{a}") for a in articles])
        await cluster.totals.wait_for(cluster.claps.expected(), 60)
        assert "left consumer group" not in again.log_text()


async def test_ready_answers_503_until_the_tables_are_restored_then_200(run_id, log_dir, real_services):
    async with Cluster(run_id, "ready", log_dir) as cluster:
        articles = cluster.articles(2)
        port = free_port()
        worker = cluster.start("w1", port, "disk")
        seen = await wait_ready(worker, port, 90)
        assert 503 in seen and seen[-1] == 200, seen
        assert seen.index(503) < seen.index(200)
        status, body = await asyncio.to_thread(ready_status, port)
        assert (status, body["ready"], body["waiting_for"]) == (200, True, None)
        assert body["partitions"] == list(range(int(cluster.env["CLAP_PARTITIONS"])))
        # Ready means counting: a clap written now is counted.
        await cluster.claps.write([clap(a, "u1", 3, f"R-{a}") for a in articles])
        await cluster.totals.wait_for(cluster.claps.expected(), 30)


_ROW = re.compile(r"^\|\s*\S+\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|")


def changelog_replay(log: str) -> tuple[int, int]:
    """From the last recovery a worker logged: (records it read from the changelogs, records the
    changelogs held). Faust logs the newest offset ("highwater") and then the offset already
    applied ("Reading Starts At", -1 for none) of every active changelog partition as tables."""
    start = log.rindex("Highwater - Active")
    highwaters = _table_values(log[start:])
    starts = _table_values(log[log.index("Reading Starts At - Active", start):])
    assert len(highwaters) == len(starts) and highwaters, log[start:start + 3000]
    written = sum(h + 1 for h in highwaters)
    replayed = sum(h - s for h, s in zip(highwaters, starts))
    return replayed, written


def _table_values(text: str) -> list[int]:
    """The last column of a Faust log table that starts ``text`` (title, header, rule, rows, rule)."""
    values = []
    for line in text.splitlines()[3:]:
        if line.startswith("+"):
            break
        match = _ROW.match(line)
        assert match, line
        values.append(int(match.group(2)))
    return values
