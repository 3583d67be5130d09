"""Consume totals and per-user counts, keep the newest of each in a batch, write, then commit.

Two kinds of records reach the projector through one pattern subscription:
- the fan-out topic's numbered totals, stored as each article's row;
- the processor's per-user changelog (one topic per epoch), stored as each reader's counted claps
  on an article (the join answer's ``mine``). Reading Faust's changelog rather than a topic of
  our own costs the processor nothing extra per clap: it writes that record anyway.

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
    def __init__(self, config: ProjectorConfig, store: ProjectionStore) -> None:
        self.config = config
        self.store = store
        self.written = 0
        self._changelog = re.compile(config.user_changelog_pattern)

    def make_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.config.kafka_bootstrap,
            group_id=self.config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            # A rebuild's new changelog is found within this, without a restart.
            metadata_max_age_ms=10_000,
        )

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        consumer = self.make_consumer()
        await consumer.start()
        consumer.subscribe(pattern=self.config.subscription_pattern)
        log.info("projector consuming %s as group %s", self.config.subscription_pattern, self.config.group_id)
        try:
            while stop is None or not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self.config.max_batch)
                if not batches:
                    await _measure_lag(consumer)
                    continue
                totals, users = self._decode(batches)
                metrics.records.labels("total").inc(len(totals))
                metrics.records.labels("user").inc(len(users))
                rows = newest_per_article(totals)
                await self._write_with_retry(self.store.write, rows, "total")
                written_ms = time.time_ns() // 1_000_000
                for row in rows:
                    if row.at_ms:
                        metrics.count_age.observe(age_s(row.at_ms, written_ms))
                await self._write_with_retry(self.store.write_user_totals, newest_per_user(users), "user")
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
                metrics.last_commit.set(time.time())
                self.written += len(rows)
                await _measure_lag(consumer)
        finally:
            await consumer.stop()

    def _decode(self, batches) -> tuple[list[CountChanged], list[UserTotal]]:
        totals: list[CountChanged] = []
        users: list[UserTotal] = []
        for tp, records in batches.items():
            changelog = self._changelog.match(tp.topic)
            for record in records:
                try:
                    if changelog is None:
                        record_on_fan_out = decode_fan_out(record.value)
                        # Counting statuses ride the same topic for the gateways; the store keeps totals.
                        if isinstance(record_on_fan_out, CountChanged):
                            totals.append(record_on_fan_out)
                    elif record.value is not None:  # a tombstone: the processor dropped a key
                        users.append(user_total_from_changelog(record.key, record.value, int(changelog.group(1))))
                except (ValueError, KeyError, TypeError, AttributeError):
                    log.warning("skipping malformed record at %s[%d]@%d", record.topic, record.partition, record.offset,
                                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset})
        return totals, users

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


async def _measure_lag(consumer: AIOKafkaConsumer) -> None:
    """Records past the position on each owned partition (from the last fetch's high watermark)."""
    owned = set()
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue  # nothing fetched from it yet
        position = await consumer.position(tp)
        metrics.lag.labels(tp.topic, str(tp.partition)).set(max(end - position, 0))
        owned.add((tp.topic, str(tp.partition)))
    for labels in list(metrics.lag._metrics):  # partitions now owned by another projector
        if labels not in owned:
            metrics.lag.remove(*labels)
