"""The clap processor's rules in one place: apply claps, coalesce per window, number the totals.

State lives in two mappings handed in by the adapter: Faust tables in the distributed mode,
SQLite-backed dicts in the embedded one. Keys are plain strings so both can store them.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import replace

from core.ledger import ArticleTally, UserClaps, apply_clap
from core.messages import ClapRecorded, CountChanged
from core.window import WindowCoalescer

KEY_SEPARATOR = ":"


def user_key(article: str, user: str) -> str:
    """The state key of one user's claps on one article.

    It starts with the article id so that a partitioner hashing the part before the separator
    puts it in the same partition as the article's claps (see ``core.partitioning``).
    """
    return f"{article}{KEY_SEPARATOR}{user}"


class ClapProcessor:
    """Applies clap events to the state and emits numbered totals once per window."""

    def __init__(
        self,
        users: MutableMapping[str, UserClaps],
        articles: MutableMapping[str, ArticleTally],
        *,
        window_ms: int,
        epoch: int,
    ) -> None:
        self.users = users
        self.articles = articles
        self.epoch = epoch
        self.windows = WindowCoalescer(window_ms)

    def apply(self, clap: ClapRecorded, offset: int, now_ms: int) -> int:
        """Apply one event read at ``offset`` of its article's partition; returns what it counted."""
        key = user_key(clap.article, clap.user)
        user = self.users.get(key) or UserClaps()
        article = self.articles.get(clap.article) or ArticleTally()
        applied = apply_clap(user, article, clap.clap_id, clap.count, offset)
        if applied.user is not user:
            self.users[key] = applied.user
        if applied.article is not article:
            self.articles[clap.article] = applied.article
        if applied.counted or applied.replayed:
            delta = 0 if applied.replayed else applied.counted
            self.windows.add(clap.article, delta, clap.at_ms, now_ms)
        return applied.counted

    def flush(self, now_ms: int, *, force: bool = False) -> list[CountChanged]:
        """Number and return one total for every article whose window is due."""
        updates = []
        for article_id, delta, newest_at_ms in self.windows.due(now_ms, force=force):
            tally = self.articles.get(article_id) or ArticleTally()
            tally = replace(tally, seq=tally.seq + 1)
            self.articles[article_id] = tally
            updates.append(
                CountChanged(article_id, tally.total, delta, tally.seq, self.epoch, newest_at_ms)
            )
        return updates

    def announce_all(self, now_ms: int) -> list[CountChanged]:
        """Number and return the current total of every article in the state.

        Used once after catching up on a long backlog (a rebuild), when announcements were held
        back: this re-announces everything the held-back windows would have said, and more.
        """
        for article_id in list(self.articles):
            self.windows.add(article_id, 0, 0, now_ms)
        return self.flush(now_ms, force=True)


class CatchUp:
    """Holds announcements back while the processor is far behind the log.

    A rebuild (a new epoch) starts at offset 0: announcing its partial totals would make every
    reader's count drop and climb back, since any epoch-2 total outranks epoch 1. So while the
    lag is above ``max_lag`` nothing is announced; once caught up, every total is announced once.
    Restarting during a catch-up simply catches up again, and announces everything at the end.
    """

    HOLD, FLUSH, ANNOUNCE_ALL = "hold", "flush", "announce_all"

    def __init__(self, max_lag: int) -> None:
        self.max_lag = max_lag
        self.holding = False

    def after_batch(self, lag: int | None, *, batch_was_full: bool = False) -> str:
        """What to do after applying a batch.

        ``lag`` is the largest number of events still to read in any assigned partition, or
        None when it is not known yet. While holding, an unknown lag or a full batch (more
        events were waiting) keeps holding.
        """
        if lag is not None and lag > self.max_lag:
            self.holding = True
            return self.HOLD
        if self.holding:
            if lag is None or batch_was_full:
                return self.HOLD
            self.holding = False
            return self.ANNOUNCE_ALL
        return self.FLUSH
