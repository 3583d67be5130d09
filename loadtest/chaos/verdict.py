"""The chaos checker's rules: recount the clap log, then judge the service against the acks.

Pure functions over plain values, no I/O and no clock, so the checker itself is unit-tested
(``loadtest/tests/test_chaos_verdict.py``). The truth it judges by is what the load tool
recorded (every clap id with its ack, error or silence) and the clap log read from offset 0;
never what the service reports about itself.

- An acked clap must be in the log (else: *acked lost*), and every total must equal the log's
  recount with the core rules (``core.processing.apply_event``: idempotency by id, the per-user cap, undos).
- Per (article, user), the recount must lie between ``min(50, acked claps)`` and
  ``min(50, acked + unanswered claps)``: below means acked claps were not counted, above means
  something was counted that nobody sent, or a clap counted twice.
- A source (Cassandra, a gateway's REST, a reader's screen) above the recount double counted;
  below it is missing claps.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.ledger import MAX_CLAPS_PER_USER, ArticleTally, UserClaps
from core.messages import ClapRecorded
from core.processing import apply_event

ACKED = "acked"
UNKNOWN = "unknown"  # sent, but no answer came (the connection died, or the run ended)


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One clap event as read from the clap topic."""

    partition: int
    offset: int
    article: str
    user: str
    count: int
    clap_id: str
    kind: str = "clap"  # or "undo"


@dataclass(slots=True)
class ClapRecord:
    """One clap batch as the load tool saw it: what it sent and what came back."""

    clap_id: str
    article: str
    user: str
    count: int
    phase: str
    sent_at: float  # Unix time of the first attempt
    attempts: int = 0
    outcome: str = UNKNOWN  # acked | unknown | refused:<code>
    ack_seq: int | None = None  # the ack's log position (offset + 1), when the gateway sends one
    acked_at: float | None = None

    @property
    def acked(self) -> bool:
        return self.outcome == ACKED

    @property
    def refused(self) -> bool:
        return self.outcome.startswith("refused:")


@dataclass
class Recount:
    """Counts derived from the log with the core rules, as a fresh processor would."""

    totals: dict[str, int] = field(default_factory=dict)
    per_user: dict[tuple[str, str], int] = field(default_factory=dict)
    ids_in_log: set[str] = field(default_factory=set)
    # (partition, offset) -> clap id, to check that an ack's position names its own event
    at_position: dict[tuple[int, int], str] = field(default_factory=dict)
    events: int = 0


def recount(events: Iterable[LogEvent]) -> Recount:
    """Apply every event in log order (per partition) with ``core.processing.apply_event``."""
    users: dict[tuple[str, str], UserClaps] = {}
    tallies: dict[str, ArticleTally] = {}
    result = Recount()
    for event in sorted(events, key=lambda e: (e.partition, e.offset)):
        key = (event.article, event.user)
        applied = apply_event(
            users.get(key, UserClaps()), tallies.get(event.article, ArticleTally()),
            ClapRecorded(event.article, event.user, event.count, event.clap_id, 0, event.kind), event.offset,
        )
        users[key] = applied.user
        tallies[event.article] = applied.article
        result.ids_in_log.add(event.clap_id)
        result.at_position[(event.partition, event.offset)] = event.clap_id
        result.events += 1
    result.totals = {article: tally.total for article, tally in tallies.items()}
    result.per_user = {key: user.total for key, user in users.items()}
    return result


@dataclass
class Verdict:
    """What one check found, over the claps and articles it was given."""

    acked: int = 0
    unknown: int = 0
    refused: int = 0
    acked_lost: dict[str, int] = field(default_factory=dict)  # acked id missing from the log -> its count
    unknown_in_log: int = 0  # unanswered claps that did reach the log (may count, once)
    refused_in_log: int = 0  # refused ("nothing was recorded") yet in the log: counts, once
    under_acked: dict[tuple[str, str], int] = field(default_factory=dict)  # (article, user) -> claps short
    over_sent: dict[tuple[str, str], int] = field(default_factory=dict)  # (article, user) -> claps too many
    ack_position_errors: list[str] = field(default_factory=list)
    # source -> article -> (observed total, recount)
    disagreements: dict[str, dict[str, tuple[int | None, int]]] = field(default_factory=dict)

    @property
    def double_counts(self) -> int:
        """Claps counted more than the log allows, the worst source (or per-user bound) taken."""
        excess = [sum(self.over_sent.values())]
        for rows in self.disagreements.values():
            excess.append(sum(max(0, (seen or 0) - expected) for seen, expected in rows.values()))
        return max(excess)

    @property
    def missing(self) -> int:
        """Claps the log counts but a source does not show, the worst source taken."""
        short = [0]
        for rows in self.disagreements.values():
            short.append(sum(max(0, expected - (seen or 0)) for seen, expected in rows.values()))
        return max(short)

    @property
    def lost(self) -> int:
        """Acked claps lost: those of acked batches absent from the log, or acked but not counted
        (the larger; a lost batch of a user already at the cap shows only in the first)."""
        return max(sum(self.acked_lost.values()), sum(self.under_acked.values()))

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.double_counts == 0 and self.missing == 0
                and not self.disagreements and not self.ack_position_errors)


def judge(
    claps: Iterable[ClapRecord],
    counted: Recount,
    observed: Mapping[str, Mapping[str, int | None]],
    articles: Iterable[str],
    *,
    partition_of: Mapping[str, int] | None = None,
) -> Verdict:
    """Judge ``claps`` (all sent on ``articles``) against the log's recount and what each source shows.

    ``observed`` maps a source name ("cassandra", "rest gateway-1", "reader 3", ...) to the
    totals it shows per article (None: it shows nothing). ``partition_of`` maps an article to its
    log partition, for checking acks that carry a position.
    """
    articles = list(articles)
    verdict = Verdict()
    acked_sum: dict[tuple[str, str], int] = defaultdict(int)
    any_sum: dict[tuple[str, str], int] = defaultdict(int)
    for clap in claps:
        key = (clap.article, clap.user)
        if clap.acked:
            verdict.acked += 1
            acked_sum[key] += clap.count
            any_sum[key] += clap.count
            if clap.clap_id not in counted.ids_in_log:
                verdict.acked_lost[clap.clap_id] = clap.count
            elif clap.ack_seq is not None and partition_of is not None:
                at = counted.at_position.get((partition_of[clap.article], clap.ack_seq - 1))
                if at != clap.clap_id:
                    verdict.ack_position_errors.append(
                        f"{clap.clap_id}: acked at seq {clap.ack_seq}, the log has {at!r} there")
        elif clap.refused:
            verdict.refused += 1
            # A refusal says "nothing was recorded"; if it is in the log anyway it may count.
            if clap.clap_id in counted.ids_in_log:
                verdict.refused_in_log += 1
                any_sum[key] += clap.count
        else:
            verdict.unknown += 1
            if clap.clap_id in counted.ids_in_log:
                verdict.unknown_in_log += 1
                any_sum[key] += clap.count
    wanted = set(articles)
    for key in set(acked_sum) | set(counted.per_user):
        if key[0] not in wanted:
            continue
        got = counted.per_user.get(key, 0)
        low = min(MAX_CLAPS_PER_USER, acked_sum.get(key, 0))
        high = min(MAX_CLAPS_PER_USER, any_sum.get(key, 0))
        if got < low:
            verdict.under_acked[key] = low - got
        if got > high:
            verdict.over_sent[key] = got - high
    for source, totals in observed.items():
        for article in articles:
            seen, expected = totals.get(article), counted.totals.get(article, 0)
            if (seen or 0) != expected:
                verdict.disagreements.setdefault(source, {})[article] = (seen, expected)
    return verdict
