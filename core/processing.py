"""The clap processor's rules in one step: a batch of log events in, state writes and totals out.

State lives in two mappings handed in by the adapter: Faust tables in the distributed mode,
SQLite-backed dicts in the embedded one. Keys are plain strings so both can store them. Both
adapters drive the same :class:`ClapCounter`: they read a batch from the log, call
:meth:`ClapCounter.step`, write the changed state, then announce the totals it returns.

Positions come from the log alone. A total's ``seq`` is the offset of the newest clap event of
its article that it includes, plus one. Any replay of the same log prefix (after a crash, with
other batch boundaries, on another worker, in a rebuild) announces the same ``(epoch, seq) ->
total``, so a position can never carry two totals, and a higher position never carries a lower
total within an epoch.

A log whose offsets have no holes (a Kafka topic without transactions or compaction) lets the
counter notice a delivery that skipped events: it applies nothing past the hole and asks the
adapter to read the partition again from the first missing offset. Faust can skip events: on a
partition that never had an offset committed, records fetched during table recovery are dropped
from the stream's queue when the flow resumes, and its seek to the committed offset has nothing
to seek to. Counting on past the hole would miss those claps for good, because the tally's
offset then covers them.
"""
from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import NamedTuple

from core.ledger import Applied, ArticleTally, UserClaps, apply_clap, apply_undo
from core.messages import ClapRecorded, CountChanged

KEY_SEPARATOR = ":"


def user_key(article: str, user: str) -> str:
    """The state key of one user's claps on one article.

    It starts with the article id so that a partitioner hashing the part before the separator
    puts it in the same partition as the article's claps (see ``core.partitioning``).
    """
    return f"{article}{KEY_SEPARATOR}{user}"


def apply_event(user: UserClaps, article: ArticleTally, event: ClapRecorded, offset: int) -> Applied:
    """Apply one clap log event read at ``offset``: a clap batch or an undo. Every recount of the
    log (the processor, a rebuild's comparison, the fault suite's checker, analytics) goes
    through here, so they all count alike."""
    if event.is_undo:
        return apply_undo(user, article, event.clap_id, offset)
    return apply_clap(user, article, event.clap_id, event.count, offset)


def split_user_key(key: str) -> tuple[str, str]:
    """``(article, user)`` of a state key made by :func:`user_key`."""
    article, _, user = key.partition(KEY_SEPARATOR)
    return article, user


def position_of(tally: ArticleTally) -> int:
    """The ``seq`` of an article's total: one past the newest log offset it includes."""
    return tally.offset + 1


def pause_before_next_batch(window_s: float, batch_wait_s: float, taken_at: float, now: float, *, backlog: bool) -> float:
    """How long a batch loop whose source waits ``batch_wait_s`` for each batch pauses before it
    asks for the next one, so that batches (and so announcements) come once per ``window_s``.

    The batch was handed over at ``taken_at``; the next one comes ``batch_wait_s`` after the
    loop asks, so asking at ``taken_at + window_s - batch_wait_s`` puts it a window after this
    one. A loop whose work took longer asks at once, and so does one behind the log (``backlog``:
    a full batch, a catch-up), where waiting would only delay counting.
    """
    if backlog:
        return 0.0
    return max(0.0, taken_at + window_s - batch_wait_s - now)


class LogEvent(NamedTuple):
    """One record read from the clap log; ``clap`` is None for a record that did not parse.

    A named tuple, not a frozen dataclass: one is made per event, and a tuple is made at a
    fraction of the cost."""

    partition: int
    offset: int
    clap: ClapRecorded | None


@dataclass(slots=True)
class _Unannounced:
    """What an article gained since its last announcement."""

    partition: int
    delta: int
    newest_at_ms: int


class ClapCounter:
    """Applies clap events to the state and says which totals to announce.

    Announcements are per batch: every article touched by a batch is announced once, at the
    position of the newest event of it that the batch held. A partition is *held* from the
    moment this counter learns of it until the log has been read up to the end offset taken
    when it was assigned: a worker catching up (a restart, a rebalance, a rebuild at a new
    epoch from offset 0) announces nothing partial, then announces every article it touched
    once. Only events of partitions assigned to this worker reach :meth:`step`, so a worker
    speaks only for the articles it owns; it never walks the state (which may hold standby
    copies or keys of revoked partitions).
    """

    def __init__(
        self,
        users: MutableMapping[str, UserClaps],
        articles: MutableMapping[str, ArticleTally],
        *,
        epoch: int,
        offsets_without_holes: bool = False,
    ) -> None:
        self.users = users
        self.articles = articles
        self.epoch = epoch
        self.offsets_without_holes = offsets_without_holes
        self._catching_up: dict[int, int] = {}  # partition -> end offset to reach
        self._live: set[int] = set()
        self._unannounced: dict[str, _Unannounced] = {}
        self._next_offset: dict[int, int] = {}  # partition -> the offset the next event must have
        self._holes: dict[int, int] = {}  # partition -> first missing offset, until it arrives

    # -- ownership ---------------------------------------------------------------------------

    def assign(self, partition: int, end_offset: int, next_offset: int = 0) -> None:
        """This worker now owns ``partition``: it will read from ``next_offset``, and the log
        ended at ``end_offset`` (exclusive) when it was assigned.

        ``next_offset`` is where the partition's delivery starts for certain: the committed offset
        (or the log's start if none was committed), not the fetcher's position, which may
        already be past records fetched and dropped around the rebalance."""
        self._next_offset[partition] = next_offset
        self._holes.pop(partition, None)
        if next_offset >= end_offset:
            self._catching_up.pop(partition, None)
            self._live.add(partition)
        else:
            self._live.discard(partition)
            self._catching_up[partition] = end_offset

    def revoke(self, partition: int) -> None:
        """Another worker owns ``partition`` now: forget what was not yet announced for it."""
        self._live.discard(partition)
        self._catching_up.pop(partition, None)
        self._next_offset.pop(partition, None)
        self._holes.pop(partition, None)
        for article in [a for a, u in self._unannounced.items() if u.partition == partition]:
            del self._unannounced[article]

    @property
    def catching_up(self) -> dict[int, int]:
        """Partitions whose totals are held back, with the end offset each must reach."""
        return dict(self._catching_up)

    def is_live(self, partition: int) -> bool:
        return partition in self._live

    @property
    def holes(self) -> dict[int, int]:
        """Partitions whose delivery skipped events, each with the first offset missing: the
        adapter must read the partition again from there. Nothing past a hole is applied."""
        return dict(self._holes)

    @property
    def expected_offsets(self) -> dict[int, int]:
        """Per assigned partition, the offset the next event must have."""
        return dict(self._next_offset)

    def has_applied(self, partition: int, offset: int) -> bool:
        """Whether the event at ``offset`` of ``partition`` is applied, in this step or before:
        what the adapter may acknowledge to the log. An event past a hole is not, until the
        partition is read again from the hole; acknowledged, its offset could be committed and
        a new owner would never read it."""
        if not self.offsets_without_holes:
            return True
        expected = self._next_offset.get(partition)
        return expected is not None and offset < expected

    def delivered_before(self, partition: int, offset: int) -> None:
        """The adapter's fetcher has handed over every record of ``partition`` below ``offset``
        and holds none in flight: one the counter still expects below it was dropped on the
        way. A hole at the tail of a delivery has no later event to reveal it."""
        expected = self._next_offset.get(partition)
        if self.offsets_without_holes and expected is not None and expected < offset:
            self._holes[partition] = expected

    def read_from(self, partition: int, offset: int) -> None:
        """The log of ``partition`` starts at ``offset`` now (retention deleted what came before):
        a hole below it can never be filled, so counting goes on from there."""
        if self._next_offset.get(partition, offset) < offset:
            self._next_offset[partition] = offset
        if self._holes.get(partition, offset) < offset:
            del self._holes[partition]

    # -- the step ----------------------------------------------------------------------------

    def step(self, events: Iterable[LogEvent]) -> list[CountChanged]:
        """Apply a batch of events in log order; return the totals to announce after it.

        The caller writes the changed state before sending the totals, and commits the log
        offsets only after both.
        """
        newest: dict[int, int] = {}
        for event in events:
            if not self._in_sequence(event):
                continue
            newest[event.partition] = max(event.offset, newest.get(event.partition, -1))
            if event.clap is not None:
                self._apply(event)
        for partition, offset in newest.items():
            end = self._catching_up.get(partition)
            # A partition nobody assigned yet stays held: an adapter may deliver events before
            # its rebalance callback has said where the log ends.
            if end is not None and offset + 1 >= end:
                del self._catching_up[partition]
                self._live.add(partition)
        return self._announce_live()

    def _in_sequence(self, event: LogEvent) -> bool:
        """Whether ``event`` may be applied: it is not past a hole in its partition's delivery.

        An event at or below the expected offset is a re-delivery, harmless by the ledger's
        offsets. One above it means events in between were skipped: it waits, with every later
        one, until the adapter has read the partition again from the hole.
        """
        if not self.offsets_without_holes:
            return True
        expected = self._next_offset.get(event.partition)
        if expected is None:
            # Not assigned yet: where its delivery must start is not known, so nothing of it is
            # applied (the ledger keeps only each record's highest offset, so an event applied
            # ahead of an earlier one makes the earlier one look like a replay). Once assigned at
            # the committed offset, the hole this leaves is read again.
            return False
        if event.offset > expected:
            self._holes[event.partition] = expected
            return False
        if event.offset == expected:
            self._next_offset[event.partition] = expected + 1
            self._holes.pop(event.partition, None)
        return True

    def _apply(self, event: LogEvent) -> None:
        clap = event.clap
        assert clap is not None
        key = user_key(clap.article, clap.user)
        user = self.users.get(key) or UserClaps()
        article = self.articles.get(clap.article) or ArticleTally()
        applied = apply_event(user, article, clap, event.offset)
        if applied.user is not user:
            self.users[key] = applied.user
        if applied.article is not article:
            self.articles[clap.article] = applied.article
        # Every event is announced, also one that counted nothing: a retried id or a clap past
        # the cap was acked with its own position, and the browser waits for a total at or above
        # it before it stops adding the clap itself. A replayed event is announced again: its
        # announcement may have been lost in the crash that made it replay. An undo's delta is
        # negative: what it took back.
        delta = 0 if applied.replayed else applied.counted
        pending = self._unannounced.get(clap.article)
        if pending is None:
            self._unannounced[clap.article] = _Unannounced(event.partition, delta, clap.at_ms)
        else:
            pending.delta += delta
            pending.newest_at_ms = max(pending.newest_at_ms, clap.at_ms)

    def _announce_live(self) -> list[CountChanged]:
        totals = []
        for article_id in [a for a, u in self._unannounced.items() if u.partition in self._live]:
            pending = self._unannounced.pop(article_id)
            tally = self.articles.get(article_id) or ArticleTally()
            totals.append(
                CountChanged(article_id, tally.total, pending.delta, position_of(tally), self.epoch, pending.newest_at_ms)
            )
        return totals
