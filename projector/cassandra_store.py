"""Cassandra adapter of the counter store (cassandra-driver).

Rows hold absolute totals, not counter columns: a retried counter increment counts twice, a
retried absolute write does not. Each write carries ``USING TIMESTAMP`` derived from
``(epoch, seq)``, so Cassandra's own last-write-wins keeps the highest position whatever order
writes arrive in, on every replica, with no read-before-write and no lock.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType

from core.messages import CountChanged

# A reader's row lives in its article's partition, so one article's rows go as one unlogged batch:
# a single-partition batch is one mutation for Cassandra and one request for the driver, instead
# of one of each per row (the projector and Cassandra took 0.56 core at 5,000 clap events/s with a
# request per row, 0.45 with batches: docs/BENCHMARKS.md §4.3). 40 rows of the longest ids (64
# characters) make about 5 KiB, Cassandra's batch warning, a tenth of its 50 KiB limit.
USER_ROWS_PER_BATCH = 40
SEQ_SPAN = 10**12  # a rebuild (new epoch) always outranks any seq of the epoch before


def write_timestamp(epoch: int, seq: int) -> int:
    """The cell timestamp for a total at ``(epoch, seq)``: ordered exactly like the position."""
    if not 0 <= seq < SEQ_SPAN:
        raise ValueError("seq out of range")
    return epoch * SEQ_SPAN + seq


class CassandraCounterStore:
    def __init__(self, hosts: Sequence[str], port: int, keyspace: str, *, replication_factor: int = 1,
                 user_rows_per_batch: int = USER_ROWS_PER_BATCH) -> None:
        self.keyspace = keyspace
        self.user_rows_per_batch = max(1, user_rows_per_batch)
        self.replication_factor = replication_factor
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            # QUORUM writes and reads overlap: a read always sees the newest acknowledged row.
            consistency_level=ConsistencyLevel.QUORUM,
        )
        self._cluster = Cluster(
            list(hosts), port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile}, protocol_version=5
        )
        self._session: Session | None = None

    async def start(self) -> None:
        self._session = await asyncio.to_thread(self._connect)

    def _connect(self) -> Session:
        session = self._cluster.connect()
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {self.replication_factor}}}"
        )
        session.execute(
            f"""CREATE TABLE IF NOT EXISTS {self.keyspace}.article_totals (
                article text PRIMARY KEY, total bigint, seq bigint, epoch int, delta int, at_ms bigint)"""
        )
        self._insert = session.prepare(
            f"INSERT INTO {self.keyspace}.article_totals (article, total, seq, epoch, delta, at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )
        session.execute(
            f"""CREATE TABLE IF NOT EXISTS {self.keyspace}.user_totals (
                article text, user text, total int, PRIMARY KEY ((article), user))"""
        )
        self._insert_user = session.prepare(
            f"INSERT INTO {self.keyspace}.user_totals (article, user, total) VALUES (?, ?, ?) USING TIMESTAMP ?"
        )
        self._select_mine = session.prepare(
            f"SELECT total FROM {self.keyspace}.user_totals WHERE article = ? AND user = ?"
        )
        self._select = session.prepare(
            f"SELECT article, total, delta, seq, epoch, at_ms FROM {self.keyspace}.article_totals WHERE article = ?"
        )
        return session

    async def write(self, totals: Sequence[CountChanged]) -> None:
        """Write all totals concurrently; one row per article, so no batch is needed."""
        assert self._session is not None
        futures = [
            _to_asyncio(
                self._session.execute_async(
                    self._insert,
                    (t.article, t.total, t.seq, t.epoch, t.delta, t.at_ms, write_timestamp(t.epoch, t.seq)),
                )
            )
            for t in totals
        ]
        await asyncio.gather(*futures)

    async def write_user_totals(self, rows) -> None:
        """Each reader's counted claps on an article, at ``USING TIMESTAMP`` of its log position.

        Each row keeps its own timestamp inside the batch, so last-write-wins still orders every
        row by its position, whatever batch or order it arrives in.
        """
        assert self._session is not None
        by_article: dict[str, list] = {}
        for row in rows:
            by_article.setdefault(row.article, []).append(row)
        futures = []
        for article_rows in by_article.values():
            for start in range(0, len(article_rows), self.user_rows_per_batch):
                chunk = article_rows[start:start + self.user_rows_per_batch]
                if len(chunk) == 1:
                    statement = self._insert_user.bind(self._user_row(chunk[0]))
                else:
                    statement = BatchStatement(batch_type=BatchType.UNLOGGED)
                    for row in chunk:
                        statement.add(self._insert_user, self._user_row(row))
                futures.append(_to_asyncio(self._session.execute_async(statement)))
        await asyncio.gather(*futures)

    @staticmethod
    def _user_row(row) -> tuple:
        return (row.article, row.user, row.total, write_timestamp(row.epoch, row.offset + 1))

    async def read(self, article: str) -> CountChanged | None:
        assert self._session is not None
        rows = await _to_asyncio(self._session.execute_async(self._select, (article,)))
        if not rows:
            return None
        row = rows[0]
        return CountChanged(row.article, row.total, row.delta or 0, row.seq, row.epoch, row.at_ms or 0)

    async def read_mine(self, article: str, user: str) -> int:
        assert self._session is not None
        rows = await _to_asyncio(self._session.execute_async(self._select_mine, (article, user)))
        return (rows[0].total or 0) if rows else 0

    async def close(self) -> None:
        await asyncio.to_thread(self._cluster.shutdown)


def _to_asyncio(future: ResponseFuture) -> asyncio.Future:
    loop = asyncio.get_running_loop()
    result: asyncio.Future = loop.create_future()

    def on_result(rows) -> None:
        loop.call_soon_threadsafe(lambda: result.done() or result.set_result(rows))

    def on_error(error: Exception) -> None:
        loop.call_soon_threadsafe(lambda: result.done() or result.set_exception(error))

    future.add_callbacks(on_result, on_error)
    return result
