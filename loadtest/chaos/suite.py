"""The fault suite: steady load, one fault at a time, and an exact check after each.

Each phase claps on articles of its own, so every number in its row belongs to its fault:

1. readers (on both gateways) join the phase's articles; clappers start clapping them;
2. after a warm-up, the fault strikes (the clock for recovery starts) and later heals;
3. the load keeps going for a while, then the clappers stop;
4. once every batch is answered (or given up on), the checker polls until the clap log's
   recount, Cassandra, both gateways' REST and every connected reader agree, or time runs out,
   and judges (``loadtest/chaos/verdict.py``).

A last check covers every article of the run, after all the faults.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.partitioning import partition_for_key
from loadtest.chaos.clients import ClapBook, FailoverClapper, FailoverReader
from loadtest.chaos.deployment import Deployment
from loadtest.chaos.faults import FAULTS, FaultContext
from loadtest.chaos.observe import CassandraRows, read_clap_log, rest_totals
from loadtest.chaos.verdict import Verdict, judge, recount
from loadtest.httpclient import HttpError, request_json

log = logging.getLogger("chaos")

ALL_FAULTS = ["gateway-kill", "worker-kill", "projector-kill", "leader-kill", "controller-kill",
              "cassandra-kill", "broker-stall", "full-restart"]


@dataclass
class SuiteConfig:
    run_dir: Path
    faults: list[str]
    baseline: bool = True
    clappers: int = 8
    overclappers: int = 2  # clap 5-13 at a time on the busy article, so the cap is reached in seconds
    clap_rate: float = 2.0  # batches per second per clapper
    readers: int = 12
    articles_per_phase: int = 4
    warmup_s: float = 8.0
    down_s: float = 10.0  # how long a killed component stays dead before it is restarted
    stall_s: float = 30.0
    after_s: float = 8.0
    recovery_limit_s: float = 60.0
    answer_timeout_s: float = 30.0
    settle_timeout_s: float = 90.0
    deadline_s: float = 1800.0
    window_ms: int = 100


@dataclass
class PhaseResult:
    fault: str
    victim: str = ""
    articles: list[str] = field(default_factory=list)
    ack_recovery_s: float | None = None
    update_recovery_s: float | None = None
    restart_s: float | None = None
    settle_s: float | None = None
    acked: int = 0
    unknown: int = 0
    refused: int = 0
    unknown_in_log: int = 0
    refused_in_log: int = 0
    lost: int = 0
    double_counts: int = 0
    missing: int = 0
    readers_reconnected: int = 0
    clappers_reconnected: int = 0
    regressions: int = 0
    drops: int = 0
    stale_snapshots: int = 0
    clap_errors: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def choose_plain(articles: tuple[str, ...], rng: random.Random, number: int) -> tuple[str, int]:
    """One clap, on each article of the phase in turn: every article moves several times a second."""
    return articles[number % len(articles)], 1


def choose_over(articles: tuple[str, ...], rng: random.Random, number: int) -> tuple[str, int]:
    """A big batch on the busy article: this user passes the cap of 50 within seconds."""
    return articles[0], rng.randint(5, 13)


async def new_session(base_url: str) -> tuple[str, str]:
    doc = await request_json("POST", f"{base_url}/api/session", timeout_s=10)
    return doc["user"], doc["token"]


async def register_articles(deployment: Deployment, articles: list[str], timeout_s: float = 30) -> None:
    """Publish the phase's articles to the catalogue, where gateways follow one; wait until known.

    A gateway without a catalogue (it counts claps for any well-formed id) needs nothing.
    """
    try:
        from gateway.articles import Article
        from gateway.catalogue import publish_articles
    except ImportError:
        return
    topic = deployment.settings.get("ARTICLES_TOPIC", "articles")
    await publish_articles(deployment.kafka_bootstrap, topic, [Article(a, a) for a in articles])
    deadline = time.monotonic() + timeout_s
    for base_url in deployment.gateway_http:
        while True:
            try:
                await request_json("GET", f"{base_url}/api/articles/{articles[-1]}/claps", timeout_s=5)
                break
            except (OSError, HttpError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{base_url} did not learn of the phase's articles in {timeout_s} s") from None
                await asyncio.sleep(0.2)


class Suite:
    def __init__(self, config: SuiteConfig) -> None:
        self.config = config
        self.deployment = Deployment.load(config.run_dir)
        self.run_id = uuid.uuid4().hex[:6]
        self.book = ClapBook()
        self.stop = asyncio.Event()
        self.deadline = time.monotonic() + config.deadline_s
        self.readers: list[FailoverReader] = []
        self.clappers: list[FailoverClapper] = []
        self.cassandra = CassandraRows(self.deployment.cassandra_hosts, self.deployment.cassandra_port,
                                       self.deployment.keyspace)
        self.partitions = 0
        self.all_articles: list[str] = []
        self.results: list[PhaseResult] = []
        self.expected: list[str] = []  # the components running when the suite began

    # -- the load --------------------------------------------------------------------------

    async def start_load(self) -> list[asyncio.Task]:
        ws, http = self.deployment.gateway_ws, self.deployment.gateway_http
        for i in range(self.config.readers):
            self.readers.append(FailoverReader(f"r{i}", ws, i % len(ws), self.book))
        total = self.config.clappers + self.config.overclappers
        for i in range(total):
            user, token = await new_session(http[i % len(http)])
            over = i >= self.config.clappers
            self.clappers.append(FailoverClapper(
                f"{self.run_id}-c{i}", ws, i % len(ws), token, user, self.book,
                rate=self.config.clap_rate,
                choose=choose_over if over else choose_plain, seed=i,
            ))
        return [asyncio.create_task(c.run(self.deadline, self.stop), name=c.name) for c in [*self.readers, *self.clappers]]

    def mark(self, at: float) -> None:
        for client in [*self.readers, *self.clappers]:
            client.mark(at)

    async def wait_for_hot_update(self, timeout_s: float) -> bool:
        article = self.book.articles[0]
        seen = {r.name: (r.articles.get(article).position if r.articles.get(article) else None) for r in self.readers}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for r in self.readers:
                held = r.articles.get(article)
                if held is not None and held.position != seen[r.name]:
                    return True
            await asyncio.sleep(0.005)
        return False

    async def wait_joined(self, articles: list[str], timeout_s: float = 30) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(r.connection is not None and all(r.articles.get(a) and r.articles[a].position is not None for a in articles)
                   for r in self.readers):
                return True
            await asyncio.sleep(0.1)
        return False

    # -- a phase ---------------------------------------------------------------------------

    async def run_phase(self, number: int, fault: str) -> PhaseResult:
        config = self.config
        result = PhaseResult(fault)
        articles = [f"chaos-{self.run_id}-{number}-{fault}-{i}" for i in range(config.articles_per_phase)]
        result.articles = articles
        self.all_articles += articles
        await register_articles(self.deployment, articles)
        self.book.phase, self.book.articles = fault, tuple(articles)
        if not await self.wait_joined(articles):
            result.problems.append("readers did not all get a first total within 30 s")
        before = {r.name: asdict(r.stats) for r in self.readers}
        self.book.clapping = True
        await asyncio.sleep(config.warmup_s)
        context = FaultContext(self.deployment, articles[0], config.down_s, config.stall_s, config.window_ms / 1000,
                               self.mark, self.wait_for_hot_update)
        log.info("phase %d: %s", number, fault)
        try:
            outcome = await FAULTS[fault](context)
            result.victim, result.restart_s = outcome.victim, outcome.restart_s
        except Exception as error:  # the fault could not be carried out: say so, do not pretend
            log.exception("fault %s failed", fault)
            result.problems.append(f"the fault itself failed: {error!r}")
        result.notes += context.notes
        await asyncio.sleep(config.after_s)
        struck = context.struck_at
        if struck is not None:
            # A fault whose recovery outlasts ``after_s`` (a rebalance after a stall) is measured
            # to its end, up to ``recovery_limit_s`` more, rather than reported as never.
            waited_until = time.monotonic() + config.recovery_limit_s
            while True:
                now = time.time()
                acks = [c.stats.acks_since_mark.longest(now) if c.stats.acks_since_mark else None for c in self.clappers]
                # Every reader, every article: a dead worker stops only its own partitions' totals.
                updates = [g for r in self.readers for g in r.update_gaps(articles, now)]
                if (None not in acks and None not in updates) or time.monotonic() > waited_until:
                    break
                await asyncio.sleep(0.5)
            result.ack_recovery_s = None if None in acks else round(max(acks), 2)
            result.update_recovery_s = None if None in updates else round(max(updates), 2)
            if result.ack_recovery_s is None:
                result.problems.append("some clapper never had a clap acked after the fault")
            if result.update_recovery_s is None:
                result.problems.append("some reader never got a total of some article that includes a clap made after the fault")
            result.readers_reconnected = sum(1 for r in self.readers if r.stats.reconnects_since_mark)
            result.clappers_reconnected = sum(1 for c in self.clappers if c.stats.reconnects_since_mark)
        await self.bring_back_the_dead(result)
        self.book.clapping = False
        await self.settle_answers()
        began = time.monotonic()
        verdict = await self.check(articles, readers=True, claps=self.book.of_phase(fault))
        result.settle_s = round(time.monotonic() - began, 1)
        self.fill(result, verdict)
        for r in self.readers:
            b = before[r.name]
            result.regressions += r.stats.regressions - b["regressions"]
            result.drops += r.stats.drops - b["drops"]
            result.stale_snapshots += r.stats.stale_snapshots - b["stale_snapshots"]
        for c in self.clappers:
            for code, n in c.stats.errors.items():
                result.clap_errors[code] = result.clap_errors.get(code, 0) + n
            c.stats.errors.clear()
        if result.regressions:
            result.problems.append(f"{result.regressions} totals below a position already delivered on the same connection")
        if result.drops:
            result.problems.append(f"{result.drops} totals lower than an earlier total of the same epoch")
        return result

    async def bring_back_the_dead(self, result: PhaseResult) -> None:
        """A process that died on its own during the phase is a finding (crash-only services
        have no supervisor here): report it, and start it again so the next phase starts whole."""
        for name in self.expected:
            if self.deployment.pid(name) is None:
                result.problems.append(f"{name} died during the phase without being killed "
                                       f"(see {self.deployment.run_dir / 'logs' / (name + '.log')})")
                try:
                    await self.deployment.ha("start", name)
                except RuntimeError as error:
                    result.problems.append(f"{name} did not start again: {error}")

    async def settle_answers(self) -> None:
        """Wait until every clapper has an answer for every batch (or has given up on it)."""
        deadline = time.monotonic() + self.config.answer_timeout_s
        while time.monotonic() < deadline and not all(c.settled for c in self.clappers):
            await asyncio.sleep(0.1)

    async def check(self, articles: list[str], *, readers: bool, claps) -> Verdict:
        """Poll until every source agrees with the log's recount (or time is up), then judge."""
        deadline = time.monotonic() + self.config.settle_timeout_s
        wanted = set(self.all_articles)
        while True:
            events, malformed = await read_clap_log(self.deployment.kafka_bootstrap, self.deployment.clap_topic, self.partitions)
            counted = recount(e for e in events if e.article in wanted)
            observed: dict[str, dict[str, int | None]] = {}
            try:
                observed["cassandra"] = await self.cassandra.totals(articles)
            except Exception as error:  # noqa: BLE001 - reported as a disagreement below
                log.warning("reading Cassandra failed: %r", error)
                observed["cassandra"] = {a: None for a in articles}
            for i, base_url in enumerate(self.deployment.gateway_http):
                observed[f"rest gateway-{i + 1}"] = await rest_totals(base_url, articles)
            if readers:
                for r in self.readers:
                    if r.connection is not None:
                        observed[f"reader {r.name}"] = {a: r.articles[a].total if a in r.articles else None for a in articles}
            partition_of = {a: partition_for_key(a.encode(), self.partitions) for a in articles}
            verdict = judge(claps, counted, observed, articles, partition_of=partition_of)
            if malformed:
                verdict.disagreements.setdefault("clap log", {})["malformed records"] = (malformed, 0)
            if not verdict.disagreements or time.monotonic() > deadline:
                return verdict
            await asyncio.sleep(2)

    @staticmethod
    def fill(result: PhaseResult, verdict: Verdict) -> None:
        result.acked, result.unknown, result.refused = verdict.acked, verdict.unknown, verdict.refused
        result.unknown_in_log, result.refused_in_log = verdict.unknown_in_log, verdict.refused_in_log
        result.lost, result.double_counts, result.missing = verdict.lost, verdict.double_counts, verdict.missing
        if verdict.acked_lost:
            result.problems.append(f"{len(verdict.acked_lost)} acked batches missing from the log: {list(verdict.acked_lost)[:10]}")
        if verdict.under_acked:
            result.problems.append(f"acked claps not counted (article, user -> short): {dict(list(verdict.under_acked.items())[:10])}")
        if verdict.over_sent:
            result.problems.append(f"more counted than sent (article, user -> over): {dict(list(verdict.over_sent.items())[:10])}")
        if verdict.ack_position_errors:
            result.problems.append(f"acks naming the wrong log position: {verdict.ack_position_errors[:5]}")
        for source, rows in verdict.disagreements.items():
            shown = {a: f"shows {seen}, log says {want}" for a, (seen, want) in list(rows.items())[:4]}
            result.problems.append(f"{source} disagrees with the log's recount: {shown}")
        if result.fault != "final" and verdict.acked == 0:
            result.problems.append("no clap was acked in this phase: the load did not run")

    # -- the whole run ---------------------------------------------------------------------

    async def run(self) -> list[PhaseResult]:
        self.expected = self.deployment.running()
        leaders = await self.deployment.partition_leaders(self.deployment.clap_topic)
        self.partitions = len(leaders)
        tasks = await self.start_load()
        try:
            phases = (["baseline"] if self.config.baseline else []) + self.config.faults
            for number, fault in enumerate(phases):
                if time.monotonic() > self.deadline - 60:
                    result = PhaseResult(fault, problems=["not run: the suite's time limit was reached"])
                else:
                    result = await self.run_phase(number, fault)
                self.results.append(result)
                print_row(result)
            self.book.articles = ()
            final = PhaseResult("final", victim="all phases' articles")
            verdict = await self.check(self.all_articles, readers=False, claps=list(self.book.claps.values()))
            self.fill(final, verdict)
            self.results.append(final)
            print_row(final)
        finally:
            self.stop.set()
            await asyncio.wait(tasks, timeout=15)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.cassandra.close()
        return self.results


COLUMNS = ("fault", "victim", "acks again s", "updates again s", "restart s", "acked", "unanswered",
           "acked lost", "double counts", "missing", "readers reconnected", "ok")


def row_of(r: PhaseResult) -> list[str]:
    def s(v: Any) -> str:
        return "-" if v is None else str(v)
    return [r.fault, r.victim, s(r.ack_recovery_s), s(r.update_recovery_s),
            s(None if r.restart_s is None else round(r.restart_s, 1)), str(r.acked), str(r.unknown),
            str(r.lost), str(r.double_counts), str(r.missing), str(r.readers_reconnected), "yes" if r.ok else "NO"]


def print_row(r: PhaseResult) -> None:
    print(" | ".join(f"{k}: {v}" for k, v in zip(COLUMNS, row_of(r))), flush=True)
    for note in r.notes:
        print(f"    note: {note}", flush=True)
    for problem in r.problems:
        print(f"    PROBLEM: {problem}", flush=True)


def table(results: list[PhaseResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row_of(r)) + " |" for r in results]
    return "\n".join(lines)
