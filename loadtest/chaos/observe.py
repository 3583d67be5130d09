"""What the checker reads: the clap log from offset 0, Cassandra's rows, each gateway's REST."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from core.messages import ClapRecorded
from loadtest.chaos.verdict import LogEvent
from loadtest.httpclient import HttpError, fetch_totals


async def read_clap_log(bootstrap: str, topic: str, partitions: int, *, timeout_s: float = 120) -> tuple[list[LogEvent], int]:
    """Every event of the clap topic, from offset 0 to the end offsets taken now.

    No consumer group: nothing is committed and no member of the service's groups is disturbed.
    Returns the events and how many records were not clap events (malformed).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", request_timeout_ms=20_000)
    await consumer.start()
    events: list[LogEvent] = []
    malformed = 0
    partitions = [TopicPartition(topic, p) for p in range(partitions)]
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} to its end took over {timeout_s} s")
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=20_000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    try:
                        clap = ClapRecorded.from_json(record.value)
                    except (ValueError, KeyError, TypeError):
                        malformed += 1
                        continue
                    events.append(LogEvent(tp.partition, record.offset, clap.article, clap.user, clap.count, clap.clap_id, clap.kind))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return events, malformed


class CassandraRows:
    """Reads the store's rows at QUORUM, as the gateways do (one session for the whole run)."""

    def __init__(self, hosts: list[str], port: int, keyspace: str) -> None:
        self.hosts, self.port, self.keyspace = hosts, port, keyspace
        self._cluster = None
        self._session = None

    def _connect(self) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile

        profile = ExecutionProfile(consistency_level=ConsistencyLevel.QUORUM, request_timeout=10)
        self._cluster = Cluster(self.hosts, port=self.port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        self._session = self._cluster.connect()

    def _read(self, articles: list[str]) -> dict[str, int | None]:
        if self._session is None:
            self._connect()
        totals: dict[str, int | None] = {article: None for article in articles}
        query = f"SELECT article, total FROM {self.keyspace}.article_totals WHERE article = %s"
        for article in articles:
            row = self._session.execute(query, (article,)).one()
            if row is not None:
                totals[article] = row.total
        return totals

    async def totals(self, articles: Iterable[str]) -> dict[str, int | None]:
        try:
            return await asyncio.to_thread(self._read, list(articles))
        except Exception:
            # After every node was down (a full restart) the driver waits minutes before it
            # tries a host again: start over with a fresh connection next time.
            await asyncio.to_thread(self.close)
            raise

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
        self._cluster = self._session = None


async def rest_totals(base_url: str, articles: Iterable[str]) -> dict[str, int | None]:
    """GET /api/claps for the articles; None for all of them where the gateway did not answer."""
    asked = list(articles)
    try:
        return dict(await fetch_totals(base_url, asked, timeout_s=5))
    except (OSError, HttpError, TimeoutError, ValueError, KeyError):
        return {article: None for article in asked}
