"""SQLite for the embedded mode: the counter store, and the processor's state beside it.

The processor's state (per-user claps, per-article tallies, the log offset it has applied) and
the published totals change together in one transaction, so after a crash the state and the
counts agree and processing resumes exactly after the last committed offset.
"""
from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import orjson

from core.ledger import ArticleTally, UserClaps
from core.messages import CountChanged
from core.processing import user_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS article_totals (
  article TEXT PRIMARY KEY, total INTEGER NOT NULL, seq INTEGER NOT NULL,
  epoch INTEGER NOT NULL, delta INTEGER NOT NULL, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS user_claps (key TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS article_tally (article TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS applied (
  id INTEGER PRIMARY KEY CHECK (id = 0), log_offset INTEGER NOT NULL, epoch INTEGER NOT NULL);
"""

# Keep the row at the highest (epoch, seq): an older or repeated write changes nothing.
_UPSERT_TOTAL = """
INSERT INTO article_totals (article, total, seq, epoch, delta, at_ms) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (article) DO UPDATE SET
  total = excluded.total, seq = excluded.seq, epoch = excluded.epoch,
  delta = excluded.delta, at_ms = excluded.at_ms
WHERE (excluded.epoch, excluded.seq) > (article_totals.epoch, article_totals.seq)
"""


class SqliteCounterStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _run(self, fn, *args):
        with self._lock:
            return fn(*args)

    # -- CounterStore ------------------------------------------------------------------------

    async def write(self, totals: Sequence[CountChanged]) -> None:
        await asyncio.to_thread(self._run, self._write_totals_tx, totals)

    def _write_totals_tx(self, totals: Sequence[CountChanged]) -> None:
        with _transaction(self._db):
            self._write_totals(totals)

    def _write_totals(self, totals: Sequence[CountChanged]) -> None:
        self._db.executemany(
            _UPSERT_TOTAL, [(t.article, t.total, t.seq, t.epoch, t.delta, t.at_ms) for t in totals]
        )

    async def read(self, article: str) -> CountChanged | None:
        return await asyncio.to_thread(self._run, self._read, article)

    def _read(self, article: str) -> CountChanged | None:
        row = self._db.execute(
            "SELECT article, total, delta, seq, epoch, at_ms FROM article_totals WHERE article = ?", (article,)
        ).fetchone()
        return CountChanged(*row) if row else None

    async def read_mine(self, article: str, user: str) -> int:
        return await asyncio.to_thread(self._run, self._read_mine, article, user)

    def _read_mine(self, article: str, user: str) -> int:
        # The processor's own per-user state, committed with the totals in one transaction.
        row = self._db.execute("SELECT doc FROM user_claps WHERE key = ?", (user_key(article, user),)).fetchone()
        return int(orjson.loads(row[0])["total"]) if row else 0

    async def close(self) -> None:
        self._run(self._db.close)

    # -- processor state ---------------------------------------------------------------------

    def load_state(self, epoch: int) -> tuple[dict[str, UserClaps], dict[str, ArticleTally], int]:
        """Everything the processor needs to resume: users, tallies, the last applied offset.

        A higher ``epoch`` than the stored one is a rebuild: the processor state is dropped and
        the log is applied again from offset 0. Published totals stay; the new epoch outranks them.
        """
        with self._lock:
            row = self._db.execute("SELECT epoch FROM applied WHERE id = 0").fetchone()
            if row is not None and row[0] < epoch:
                with _transaction(self._db):
                    self._db.execute("DELETE FROM user_claps")
                    self._db.execute("DELETE FROM article_tally")
                    self._db.execute("DELETE FROM applied")
            users = {k: UserClaps.from_dict(orjson.loads(d)) for k, d in self._db.execute("SELECT key, doc FROM user_claps")}
            tallies = {a: ArticleTally.from_dict(orjson.loads(d)) for a, d in self._db.execute("SELECT article, doc FROM article_tally")}
            row = self._db.execute("SELECT log_offset FROM applied WHERE id = 0").fetchone()
        return users, tallies, row[0] if row else -1

    async def commit(
        self,
        users: dict[str, UserClaps],
        tallies: dict[str, ArticleTally],
        applied_offset: int,
        epoch: int,
        totals: Sequence[CountChanged],
    ) -> None:
        """Write changed state, the new applied offset and the emitted totals atomically."""
        await asyncio.to_thread(self._run, self._commit, users, tallies, applied_offset, epoch, totals)

    def _commit(self, users, tallies, applied_offset, epoch, totals) -> None:
        with _transaction(self._db):
            self._db.executemany(
                "INSERT OR REPLACE INTO user_claps (key, doc) VALUES (?, ?)",
                [(k, orjson.dumps(u.to_dict())) for k, u in users.items()],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO article_tally (article, doc) VALUES (?, ?)",
                [(a, orjson.dumps(t.to_dict())) for a, t in tallies.items()],
            )
            self._db.execute(
                "INSERT OR REPLACE INTO applied (id, log_offset, epoch) VALUES (0, ?, ?)", (applied_offset, epoch)
            )
            self._write_totals(totals)


class _transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
