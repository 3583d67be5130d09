"""Consume totals and per-user counts, keep the newest of each in a batch, write, then commit.

Two kinds of records, each read by a loop and consumer group of its own (``Projector``):
- the fan-out topic's numbered totals, stored as each article's row;
- the processor's per-user changelog (one topic per epoch, found by pattern), stored as each
  reader's counted claps on an article (the join answer's ``mine``). Reading Faust's changelog
  rather than a topic of our own costs the processor nothing extra per clap: it writes that
  record anyway.

At-least-once: offsets are committed only after Cassandra acknowledged the rows, and since every
row is an absolute value at a log position (``USING TIMESTAMP``), writing it again after a crash
changes nothing.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError
from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
from cassandra.cluster import NoHostAvailable

from core.ledger import UserClaps
from core.messages import CountChanged, decode_fan_out, newest_per_article
from core.ports import CounterStore
from core.processing import split_user_key
from observability.freshness import age_s
from projector import metrics
from projector.config import ProjectorConfig

log = logging.getLogger("projector")

# Failures that a later attempt can get past (a node down, a timeout). Anything else (a schema
# error, a bug) propagates: the process exits non-zero without committing, loudly.
TRANSIENT = (Unavailable, WriteTimeout, ReadTimeout, OperationTimedOut, NoHostAvailable, ConnectionError, TimeoutError)


@dataclass(frozen=True, slots=True)
class UserTotal:
    """A reader's counted claps on an article, as of log ``offset`` at ``epoch``."""

    article: str
    user: str
    total: int
    epoch: int
    offset: int

    def position(self) -> tuple[int, int]:
        return (self.epoch, self.offset)


class ProjectionStore(CounterStore, Protocol):
    async def write_user_totals(self, rows: Sequence[UserTotal]) -> None: ...


def user_total_from_changelog(key: bytes, value: bytes, epoch: int) -> UserTotal:
    article, user = split_user_key(key.decode())
    record = UserClaps.from_dict(orjson.loads(value))
    return UserTotal(article, user, record.total, epoch, record.offset)


def newest_per_user(rows: list[UserTotal]) -> list[UserTotal]:
    newest: dict[tuple[str, str], UserTotal] = {}
    for row in rows:
        held = newest.get((row.article, row.user))
        if held is None or row.position() > held.position():
            newest[(row.article, row.user)] = row
    return list(newest.values())


class Projector:
    """Two independent loops, each with a consumer group of its own: the totals (what a page loads
    and what the durable count means) and the reader rows (three times as many rows per batch).

    Each loop fetches, keeps the newest row per key, writes, then commits, so a slow write of one
    kind never holds the other back: in one loop, a batch's totals waited for the batch before's
    reader rows (docs/BENCHMARKS.md §4.13).
    """

    def __init__(self, config: ProjectorConfig, store: ProjectionStore) -> None:
        self.config = config
        self.store = store
        self.written = 0
        self._changelog = re.compile(config.user_changelog_pattern)

    def make_consumer(self, kind: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.config.kafka_bootstrap,
            group_id=self.config.group_for(kind),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            # A rebuild's new changelog is found within this, without a restart.
            metadata_max_age_ms=10_000,
        )

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Project both kinds until ``stop``. A stop ends a write in flight too: its batch is not
        committed, so it is written again by whoever reads it next, which changes nothing. If
        either loop fails, the other is stopped and the failure propagates (the process exits
        non-zero)."""
        stop = stop or asyncio.Event()
        loops = [asyncio.ensure_future(self._project(kind)) for kind in metrics.KINDS]
        stopped = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait([*loops, stopped], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (*loops, stopped):
                task.cancel()
            await asyncio.gather(*loops, stopped, return_exceptions=True)

    async def _project(self, kind: str) -> None:
        consumer = self.make_consumer(kind)
        await consumer.start()
        pattern = self.config.pattern_for(kind)
        consumer.subscribe(pattern=pattern)
        log.info("projector consuming %s as group %s", pattern, self.config.group_for(kind))
        # A loop that never commits after its start is as stopped as one that stopped committing.
        metrics.last_commit.labels(kind).set(time.time())
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=self.config.max_batch)
                if not batches:
                    await _measure_lag(consumer, kind)
                    continue
                if kind == "total":
                    await self._write_totals(self._decode_totals(batches))
                else:
                    await self._write_with_retry(self.store.write_user_totals,
                                                 newest_per_user(self._decode_users(batches)), "user")
                try:
                    await consumer.commit()
                except CommitFailedError as error:
                    # The group gave these partitions to another member while the batch was
                    # written (this one missed its heartbeats, e.g. in a broker stall). The new
                    # owner reads them again from the last commit; the rows are absolute values at
                    # log positions, so writing them twice changes nothing. The next fetch rejoins.
                    log.warning("offsets not committed, the group rebalanced meanwhile: %s", error)
                    metrics.commits_lost.inc()
                    continue
                metrics.last_commit.labels(kind).set(time.time())
                await _measure_lag(consumer, kind)
        finally:
            await consumer.stop()

    async def _write_totals(self, totals: list[CountChanged]) -> None:
        rows = newest_per_article(totals)
        await self._write_with_retry(self.store.write, rows, "total")
        written_ms = time.time_ns() // 1_000_000
        for row in rows:
            if row.at_ms:
                metrics.count_age.observe(age_s(row.at_ms, written_ms))
        self.written += len(rows)

    def _decode_totals(self, batches) -> list[CountChanged]:
        totals: list[CountChanged] = []
        for records in batches.values():
            for record in records:
                try:
                    record_on_fan_out = decode_fan_out(record.value)
                except (ValueError, KeyError, TypeError, AttributeError):
                    _skip(record)
                    continue
                # Counting statuses ride the same topic for the gateways; the store keeps totals.
                if isinstance(record_on_fan_out, CountChanged):
                    totals.append(record_on_fan_out)
        metrics.records.labels("total").inc(len(totals))
        return totals

    def _decode_users(self, batches) -> list[UserTotal]:
        users: list[UserTotal] = []
        for tp, records in batches.items():
            changelog = self._changelog.match(tp.topic)
            if changelog is None:  # the pattern subscribed to matches only changelogs
                continue
            epoch = int(changelog.group(1))
            for record in records:
                if record.value is None:  # a tombstone: the processor dropped a key
                    continue
                try:
                    users.append(user_total_from_changelog(record.key, record.value, epoch))
                except (ValueError, KeyError, TypeError, AttributeError):
                    _skip(record)
        metrics.records.labels("user").inc(len(users))
        return users

    async def _write_with_retry(self, write, rows, kind: str) -> None:
        if not rows:
            return
        delay = 0.1
        started = time.perf_counter()
        while True:
            try:
                await write(rows)
                metrics.write_seconds.labels(kind).observe(time.perf_counter() - started)
                metrics.rows_written.labels(kind).inc(len(rows))
                return
            except TRANSIENT as error:  # Cassandra unavailable: hold the batch, never skip it
                metrics.write_retries.inc()
                log.warning("writing %d rows failed (%r); retrying in %.1fs", len(rows), error, delay,
                            extra={"kind": kind, "rows": len(rows)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _skip(record) -> None:
    log.warning("skipping malformed record at %s[%d]@%d", record.topic, record.partition, record.offset,
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset})


async def _measure_lag(consumer: AIOKafkaConsumer, kind: str) -> None:
    """Records past the position on each partition this kind's consumer owns (from the last
    fetch's high watermark)."""
    owned = set()
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue  # nothing fetched from it yet
        position = await consumer.position(tp)
        metrics.lag.labels(kind, tp.topic, str(tp.partition)).set(max(end - position, 0))
        owned.add((kind, tp.topic, str(tp.partition)))
    for labels in list(metrics.lag._metrics):  # this kind's partitions now owned by another projector
        if labels[0] == kind and labels not in owned:
            metrics.lag.remove(*labels)
