"""The per-user cap and idempotency, made safe for at-least-once delivery.

Each record remembers the highest log offset it has absorbed. Re-applying an event at or below
that offset changes nothing, so the processor may crash between writing the user record and the
article record, be restarted, and re-read the same events without counting anything twice or
losing anything: each record independently knows what it already holds. Offsets are per log
partition; every event of one article lives in one partition (the log is keyed by article).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

MAX_CLAPS_PER_USER = 50


@dataclass(frozen=True, slots=True)
class UserClaps:
    """What one user has given one article.

    ``accepted`` holds ``(clap_id, offset, counted)`` for every batch that counted; at most
    ``MAX_CLAPS_PER_USER`` entries because each counts at least one clap, so the idempotency
    memory is bounded by the cap itself.
    """

    total: int = 0
    offset: int = -1
    accepted: tuple[tuple[str, int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "offset": self.offset, "accepted": [list(a) for a in self.accepted]}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> UserClaps:
        return cls(doc["total"], doc["offset"], tuple((a[0], a[1], a[2]) for a in doc["accepted"]))


@dataclass(frozen=True, slots=True)
class ArticleTally:
    """The processor's running total for one article and the newest log offset it includes."""

    total: int = 0
    offset: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "offset": self.offset}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ArticleTally:
        return cls(doc["total"], doc["offset"])


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of applying one clap event.

    ``counted`` is how many claps it added (0 for a duplicate id or a user at the cap);
    ``replayed`` says the article already held this offset, so nothing new was added but the
    current total should be announced again in case the earlier announcement was lost.
    """

    user: UserClaps
    article: ArticleTally
    counted: int
    replayed: bool


def apply_clap(
    user: UserClaps, article: ArticleTally, clap_id: str, count: int, offset: int
) -> Applied:
    """Apply a clap batch of ``count`` claps with id ``clap_id`` read at log ``offset``."""
    if offset <= user.offset:
        # The user record already absorbed this event: recover what it counted then.
        counted = next((c for (cid, off, c) in user.accepted if off == offset), 0)
        new_user = user
    elif any(cid == clap_id for (cid, _, _) in user.accepted):
        counted = 0  # the same clap batch sent again, e.g. a client retry after a lost ack
        new_user = replace(user, offset=offset)
    else:
        counted = max(0, min(count, MAX_CLAPS_PER_USER - user.total))
        accepted = user.accepted + ((clap_id, offset, counted),) if counted else user.accepted
        new_user = UserClaps(user.total + counted, offset, accepted)
    if offset <= article.offset:
        return Applied(new_user, article, counted, replayed=True)
    new_article = replace(article, total=article.total + counted, offset=offset)
    return Applied(new_user, new_article, counted, replayed=False)
