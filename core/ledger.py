"""The per-user cap and idempotency, made safe for at-least-once delivery.

Each record remembers the highest log offset it has absorbed. Re-applying an event at or below
that offset changes nothing, so the processor may crash between writing the user record and the
article record, be restarted, and re-read the same events without counting anything twice or
losing anything: each record independently knows what it already holds. Offsets are per log
partition; every event of one article lives in one partition (the log is keyed by article).

An undo takes back everything a user had counted on an article. The batches it took back stay
remembered (ids, offsets and what they counted), so a batch retried after the undo counts
nothing, and a replay of the log across the undo recovers what each event counted. The memory is
bounded: a user may undo at most ``MAX_UNDOS_PER_USER`` times per article (later undos take
nothing back), so a record holds at most ``(MAX_UNDOS_PER_USER + 1) * MAX_CLAPS_PER_USER``
batches and ``MAX_UNDOS_PER_USER`` undo ids.
"""
from __future__ import annotations

from typing import Any, NamedTuple

MAX_CLAPS_PER_USER = 50
MAX_UNDOS_PER_USER = 5


class UserClaps(NamedTuple):
    """What one user has given one article.

    ``accepted`` holds ``(clap_id, offset, counted)`` for every batch that counted; at most
    ``MAX_CLAPS_PER_USER`` entries because each counts at least one clap, so this part of the
    idempotency memory is bounded by the cap itself. ``undone`` holds the batches that undos took
    back, in the same form; ``undos`` holds ``(undo_id, offset, removed)`` for every undo applied
    (at most ``MAX_UNDOS_PER_USER``).

    The records of this module are named tuples, immutable like frozen dataclasses but made at a
    fraction of the cost: a frozen dataclass sets each field through ``object.__setattr__``, and
    the three records made per clap event took 5.4 % of a processor worker's samples
    (docs/BENCHMARKS.md §4.12). The apply functions below build each new record positionally.
    A new field must be added there.
    """

    total: int = 0
    offset: int = -1
    accepted: tuple[tuple[str, int, int], ...] = ()
    undone: tuple[tuple[str, int, int], ...] = ()
    undos: tuple[tuple[str, int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        # Entries stay tuples: orjson writes them as the same arrays as lists, without a copy
        # per entry on every write of the record.
        doc: dict[str, Any] = {"total": self.total, "offset": self.offset, "accepted": self.accepted}
        # Only users who undid carry the extra fields: the common record stays as it was.
        if self.undone:
            doc["undone"] = self.undone
        if self.undos:
            doc["undos"] = self.undos
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> UserClaps:
        def entries(name: str) -> tuple[tuple[str, int, int], ...]:
            return tuple((a[0], a[1], a[2]) for a in doc.get(name, ()))

        return cls(doc["total"], doc["offset"], entries("accepted"), entries("undone"), entries("undos"))

    def knows(self, batch_id: str) -> bool:
        """Whether a clap batch with this id was counted, now or before an undo."""
        # Plain loops, not any() over a generator: a reader who taps one clap at a time has up
        # to 50 entries, all looked at for every new clap. Counting 50 single claps per user
        # (`loadtest.processor_rate --users 50 --claps-per-user 50 --profile 10`), this method
        # took 10.5 % of a worker's samples with the generator, 7.1 % without (BENCHMARKS §4.11).
        for entries in (self.accepted, self.undone):
            for clap_id, _, _ in entries:
                if clap_id == batch_id:
                    return True
        return False

    def counted_at(self, offset: int) -> int:
        """What the event at ``offset`` counted (negative for an undo); 0 if it counted nothing."""
        for entries, sign in ((self.accepted, 1), (self.undone, 1), (self.undos, -1)):
            for (_, event_offset, counted) in entries:
                if event_offset == offset:
                    return sign * counted
        return 0


class ArticleTally(NamedTuple):
    """The processor's running total for one article and the newest log offset it includes."""

    total: int = 0
    offset: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "offset": self.offset}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ArticleTally:
        return cls(doc["total"], doc["offset"])


class Applied(NamedTuple):
    """The outcome of applying one clap event.

    ``counted`` is how many claps it added (0 for a duplicate id or a user at the cap; minus what
    an undo took back);
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
        counted = user.counted_at(offset)
        new_user = user
    elif user.knows(clap_id):
        # The same clap batch sent again, e.g. a client retry after a lost ack, also one that an
        # undo has taken back since: it is never counted a second time.
        counted = 0
        new_user = UserClaps(user.total, offset, user.accepted, user.undone, user.undos)
    else:
        counted = max(0, min(count, MAX_CLAPS_PER_USER - user.total))
        accepted = user.accepted + ((clap_id, offset, counted),) if counted else user.accepted
        new_user = UserClaps(user.total + counted, offset, accepted, user.undone, user.undos)
    return _absorb(new_user, article, counted, offset)


def apply_undo(user: UserClaps, article: ArticleTally, undo_id: str, offset: int) -> Applied:
    """Apply an undo with id ``undo_id`` read at log ``offset``: the user's counted claps go.

    A repeated undo id takes nothing (a retry after a lost ack must not take back claps made
    after the first copy), nor does an undo past ``MAX_UNDOS_PER_USER``.
    """
    if offset <= user.offset:
        counted = user.counted_at(offset)
        new_user = user
    elif any(uid == undo_id for (uid, _, _) in user.undos) or len(user.undos) >= MAX_UNDOS_PER_USER:
        counted = 0
        new_user = UserClaps(user.total, offset, user.accepted, user.undone, user.undos)
    else:
        counted = -user.total
        new_user = UserClaps(0, offset, (), user.undone + user.accepted, user.undos + ((undo_id, offset, user.total),))
    return _absorb(new_user, article, counted, offset)


def _absorb(new_user: UserClaps, article: ArticleTally, counted: int, offset: int) -> Applied:
    if offset <= article.offset:
        return Applied(new_user, article, counted, True)
    return Applied(new_user, ArticleTally(article.total + counted, offset), counted, False)
