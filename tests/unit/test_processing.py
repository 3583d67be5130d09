"""The processor's one step (core.processing): positions from the log, catch-up, ownership."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.ledger import MAX_CLAPS_PER_USER, ArticleTally, UserClaps
from core.messages import ClapRecorded, CountChanged, is_newer, undo_recorded
from core.processing import ClapCounter, LogEvent, pause_before_next_batch, user_key


def clap(article="a", user="u", count=1, clap_id="c", at_ms=0):
    return ClapRecorded(article, user, count, clap_id, at_ms)


def live_counter(*partitions, epoch=1):
    users: dict[str, UserClaps] = {}
    articles: dict[str, ArticleTally] = {}
    counter = ClapCounter(users, articles, epoch=epoch)
    for partition in partitions or (0,):
        counter.assign(partition, 0)  # an empty log: live from the first event
    return counter, users, articles


def test_one_total_per_touched_article_at_the_offset_of_its_newest_event():
    counter, _, _ = live_counter()
    updates = counter.step([
        LogEvent(0, 0, clap(user="u1", clap_id="1", count=2, at_ms=7)),
        LogEvent(0, 1, clap(article="b", user="u1", clap_id="3", at_ms=8)),
        LogEvent(0, 2, clap(user="u2", clap_id="2", count=3, at_ms=9)),
    ])
    assert sorted(updates, key=lambda u: u.article) == [
        CountChanged("a", 5, 5, 3, 1, 9),
        CountChanged("b", 1, 1, 2, 1, 8),
    ]


def test_capped_or_duplicate_claps_announce_the_unchanged_total_at_their_position():
    # Their acks carried their positions: a browser adds such a clap itself until a total at or
    # above its position says it is in (or, here, that it counted nothing).
    counter, users, _ = live_counter()
    assert counter.step([LogEvent(0, 0, clap(count=50, clap_id="a"))])[0].total == 50
    assert counter.step([
        LogEvent(0, 1, clap(count=1, clap_id="b")),  # over the cap
        LogEvent(0, 2, clap(count=50, clap_id="a")),  # a retry of a counted batch
    ]) == [CountChanged("a", 50, 0, 3, 1, 0)]
    assert users[user_key("a", "u")].total == MAX_CLAPS_PER_USER


def test_a_replayed_event_is_announced_again_at_the_same_position():
    counter, _, _ = live_counter()
    [first] = counter.step([LogEvent(0, 4, clap(count=2))])
    [again] = counter.step([LogEvent(0, 4, clap(count=2))])  # re-read after a crash
    assert (again.total, again.seq, again.delta) == (first.total, first.seq, 0)


def test_malformed_records_advance_the_partition_and_count_nothing():
    counter, _, _ = live_counter()
    counter.assign(0, 3)
    assert counter.step([LogEvent(0, 0, clap()), LogEvent(0, 1, None)]) == []
    [update] = counter.step([LogEvent(0, 2, None)])
    assert (update.total, update.seq) == (1, 1)


def test_a_partition_catching_up_announces_nothing_until_it_reaches_the_end_taken_at_assignment():
    # A rebuild at default settings with a log far smaller than any lag threshold: 30 events.
    counter, _, _ = live_counter(epoch=2)
    counter.assign(0, 30)
    log = [LogEvent(0, i, clap(article=f"a{i % 3}", user=f"u{i}", clap_id=str(i))) for i in range(30)]
    assert counter.step(log[:10]) == []
    assert counter.step(log[10:29]) == []
    assert counter.catching_up == {0: 30}
    final = {u.article: (u.total, u.seq, u.epoch, u.delta) for u in counter.step(log[29:])}
    assert final == {"a0": (10, 28, 2, 10), "a1": (10, 29, 2, 10), "a2": (10, 30, 2, 10)}
    assert counter.catching_up == {}


def test_a_partition_nobody_assigned_is_held():
    users: dict = {}
    counter = ClapCounter(users, {}, epoch=1)
    assert counter.step([LogEvent(5, 0, clap())]) == []
    counter.assign(5, 1)
    assert counter.step([LogEvent(5, 0, clap())])[0].total == 1  # released by the replay


def test_partitions_catch_up_independently():
    counter, _, _ = live_counter(0)
    counter.assign(1, 100)
    updates = counter.step([LogEvent(0, 0, clap(article="live")), LogEvent(1, 0, clap(article="held"))])
    assert [u.article for u in updates] == ["live"]


def test_revoking_a_partition_forgets_what_it_held():
    counter, _, _ = live_counter()
    counter.assign(0, 10)
    counter.step([LogEvent(0, 0, clap())])
    counter.revoke(0)
    counter.assign(0, 1)
    # The event is in the state already: it is announced again, but its delta went with the revoke.
    [update] = counter.step([LogEvent(0, 0, clap())])
    assert (update.total, update.seq, update.delta) == (1, 1, 0)


# -- the property: positions a crash cannot change ----------------------------------------------

ARTICLES = ["a", "b", "c"]


@st.composite
def logs(draw):
    """Events over two partitions (articles a, b in 0; c in 1), a few users near the cap, undos."""
    size = draw(st.integers(1, 60))
    events, offsets = [], {0: 0, 1: 0}
    for i in range(size):
        article = draw(st.sampled_from(ARTICLES))
        partition = 1 if article == "c" else 0
        user = draw(st.sampled_from(["u1", "u2", "u3"]))
        if draw(st.integers(0, 9)) == 0:
            undo_id = draw(st.sampled_from([f"undo{i}", "undo-retried"]))
            event = undo_recorded(article, user, undo_id, i)
        else:
            count = draw(st.integers(1, 30))
            clap_id = draw(st.sampled_from([f"id{i}", "retried"]))  # some ids repeat: client retries
            event = clap(article, user, count, clap_id, at_ms=i)
        events.append(LogEvent(partition, offsets[partition], event))
        offsets[partition] += 1
    return events


def expected_totals(events):
    """A plain recount: every event once, in log order, cap and idempotency applied."""
    counter, _, articles = live_counter(0, 1)
    counter.step(events)
    return {a: t.total for a, t in articles.items()}


class Persistent:
    """State that survives a crash, written key by key (a crash can stop a write-back midway)."""

    def __init__(self):
        self.users: dict[str, UserClaps] = {}
        self.articles: dict[str, ArticleTally] = {}

    def write_back(self, users, articles, stop_after: int | None):
        writes = [(self.users, k, v) for k, v in users.items() if self.users.get(k) != v]
        writes += [(self.articles, k, v) for k, v in articles.items() if self.articles.get(k) != v]
        for n, (table, key, value) in enumerate(writes):
            if stop_after is not None and n >= stop_after:
                return False
            table[key] = value
        return True


@settings(max_examples=300, deadline=None)
@given(logs(), st.data())
def test_every_position_carries_one_total_and_totals_fall_only_at_an_undo_whatever_the_crashes(events, data):
    disk = Persistent()
    committed = {0: -1, 1: -1}  # offsets a worker resumes after
    announced: dict[tuple[str, int], int] = {}  # (article, seq) -> total
    ends = {p: 1 + max([e.offset for e in events if e.partition == p], default=-1) for p in (0, 1)}
    for _run in range(data.draw(st.integers(1, 4), label="runs")):
        users, articles = dict(disk.users), dict(disk.articles)
        counter = ClapCounter(users, articles, epoch=1)
        for p in (0, 1):
            counter.assign(p, ends[p])
        pending = [e for e in events if e.offset > committed[e.partition]]
        crashed = False
        while pending and not crashed:
            size = data.draw(st.integers(1, 10), label="batch")
            batch, pending = pending[:size], pending[size:]
            for update in counter.step(batch):
                assert announced.setdefault((update.article, update.seq), update.total) == update.total
            crash_at = data.draw(st.one_of(st.none(), st.integers(0, 8)), label="crash during write-back")
            crashed = not disk.write_back(users, articles, crash_at)
            if not crashed and data.draw(st.booleans(), label="commit"):
                for e in batch:
                    committed[e.partition] = max(committed[e.partition], e.offset)
        if not crashed and not pending:
            break
    # Finish cleanly: a last worker reads whatever remains.
    users, articles = dict(disk.users), dict(disk.articles)
    counter = ClapCounter(users, articles, epoch=1)
    for p in (0, 1):
        counter.assign(p, ends[p])
    rest = [e for e in events if e.offset > committed[e.partition]]
    for update in counter.step(rest):
        assert announced.setdefault((update.article, update.seq), update.total) == update.total
    expected = expected_totals(events)
    assert {a: t.total for a, t in articles.items()} == expected
    for article in ARTICLES:
        series = sorted((seq, total) for (a, seq), total in announced.items() if a == article)
        for (seq, total), (next_seq, next_total) in zip(series, series[1:]):
            if next_total < total:  # a lower total at a higher seq: only through an undo between
                between = [e for e in events if e.clap.article == article and seq <= e.offset < next_seq]
                assert any(e.clap.is_undo for e in between), (article, seq, total, next_seq, next_total)
        for seq, total in series:  # each position's total is the plain recount of the log up to it
            prefix = [e for e in events if e.partition == events_partition(article) and e.offset < seq]
            assert total == expected_totals(prefix).get(article, 0)
        if series:
            assert series[-1][1] == expected[article]


def events_partition(article: str) -> int:
    return 1 if article == "c" else 0


def test_an_undo_announces_the_lower_total_at_its_own_position_with_a_negative_delta():
    counter, users, _ = live_counter()
    counter.step([LogEvent(0, 0, clap(user="u1", count=5, clap_id="a")), LogEvent(0, 1, clap(user="u2", count=3, clap_id="b"))])
    [update] = counter.step([LogEvent(0, 2, undo_recorded("a", "u1", "undo-1", 11))])
    assert update == CountChanged("a", 3, -5, 3, 1, 11)
    assert users[user_key("a", "u1")].total == 0
    # The retried batch counts nothing; the retried undo takes nothing; new claps count.
    [update] = counter.step([
        LogEvent(0, 3, clap(user="u1", count=5, clap_id="a")),
        LogEvent(0, 4, clap(user="u1", count=2, clap_id="c")),
        LogEvent(0, 5, undo_recorded("a", "u1", "undo-1", 12)),
    ])
    assert (update.total, update.delta, update.seq) == (5, 2, 6)


def test_epoch_outranks_any_sequence_of_the_epoch_before():
    assert is_newer((2, 1), (1, 10**9))
    assert not is_newer((1, 5), (1, 5))
    assert is_newer((0, 0), None)


def test_a_partition_already_read_to_its_end_is_live_at_once():
    counter, _, _ = live_counter()
    counter.assign(3, end_offset=40, next_offset=40)
    assert counter.catching_up == {} and counter.is_live(3)
    counter.assign(4, end_offset=40, next_offset=12)
    assert counter.catching_up == {4: 40}


def test_a_log_record_the_schema_refuses_counts_nothing():
    import pytest

    from core.messages import ClapRecorded as Record

    good = clap(count=50).to_json()
    assert Record.from_json(good).count == 50
    for bad in (b'{"type":"clap","article":"a","user":"u","count":99,"id":"c","at":0}',
                b'{"type":"clap","article":"a","user":"u","count":2.5,"id":"c","at":0}',
                b'{"type":"clap","article":"a b","user":"u","count":1,"id":"c","at":0}'):
        with pytest.raises(ValueError):
            Record.from_json(bad)


# -- holes in a delivery: nothing past a hole is applied ------------------------------------------


def hole_guarded_counter(end_offsets):
    users: dict[str, UserClaps] = {}
    articles: dict[str, ArticleTally] = {}
    counter = ClapCounter(users, articles, epoch=1, offsets_without_holes=True)
    for partition, end in end_offsets.items():
        counter.assign(partition, end, next_offset=0)
    return counter, articles


def test_a_delivery_that_skips_events_applies_nothing_past_the_hole_until_they_are_read_again():
    # The CI failure behind this guard: a fresh worker got offsets 0-135, Faust's recovery then
    # dropped 136-138 from the stream's queue, and delivery went on at 139.
    log = [LogEvent(0, i, clap(user=f"u{i}", clap_id=str(i))) for i in range(12)]
    counter, articles = hole_guarded_counter({0: 12})
    counter.step(log[:5])
    assert counter.step(log[8:]) == []  # 5-7 were never delivered
    assert counter.holes == {0: 5}
    assert articles["a"] == ArticleTally(5, 4)
    assert counter.catching_up == {0: 12}  # an end reached past a hole does not count
    [update] = counter.step(log[5:])  # the adapter read the partition again from offset 5
    assert (update.total, update.seq) == (12, 12)
    assert counter.holes == {}


def test_only_applied_events_may_be_acknowledged_so_no_commit_passes_a_hole():
    log = [LogEvent(0, i, clap(user=f"u{i}", clap_id=str(i))) for i in range(10)]
    counter, _ = hole_guarded_counter({0: 10})
    counter.step(log[:3] + log[6:])  # 3-5 were never delivered
    assert [e.offset for e in log if counter.has_applied(0, e.offset)] == [0, 1, 2]
    counter.step(log[3:])  # read again from the hole: everything is applied now
    assert all(counter.has_applied(0, e.offset) for e in log)
    assert not counter.has_applied(7, 123)  # a partition not assigned yet: nothing of it is applied


def test_events_delivered_before_their_partition_is_assigned_wait_for_the_read_from_the_committed_offset():
    # `make chaos`, worker-kill: the new owner's fetcher passed offsets 741-762 of a partition
    # before its rebalance callback ran, the records were dropped, and the counter, assigned at
    # the fetch position (763), counted on from there. One user's claps after the skipped ones
    # raised that user's record's offset, so the skipped ones, read again by the next owner,
    # looked like replays: 11 claps were never counted.
    log = [LogEvent(0, i, clap(user="u", clap_id=str(i))) for i in range(10)]
    users: dict[str, UserClaps] = {}
    articles: dict[str, ArticleTally] = {}
    counter = ClapCounter(users, articles, epoch=1, offsets_without_holes=True)
    assert counter.step(log[5:7]) == []  # delivered before the callback; 0-4 fetched and dropped
    assert users == {} and not any(counter.has_applied(0, e.offset) for e in log)
    counter.assign(0, end_offset=10, next_offset=0)  # the committed offset, not the position (7)
    counter.step(log[7:])  # delivery goes on from the fetch position
    assert counter.holes == {0: 0} and users == {}
    [update] = counter.step(log)  # read again from the committed offset
    assert (update.total, update.seq) == (10, 10) and articles["a"].total == 10
    assert counter.holes == {}


def test_a_redelivery_below_the_expected_offset_is_not_a_hole():
    log = [LogEvent(0, i, clap(user=f"u{i}", clap_id=str(i))) for i in range(6)]
    counter, articles = hole_guarded_counter({0: 6})
    counter.step(log[:4])
    counter.step(log[1:])  # a seek back re-delivers 1-3
    assert counter.holes == {} and articles["a"] == ArticleTally(6, 5)


def test_a_hole_at_the_tail_of_a_delivery_is_found_by_the_fetch_position():
    counter, articles = hole_guarded_counter({0: 3})
    counter.step([LogEvent(0, 0, clap())])  # 1 and 2 were fetched, then dropped
    assert counter.holes == {}
    counter.delivered_before(0, 3)
    assert counter.holes == {0: 1}
    counter.delivered_before(0, 1)  # nothing missing below the expected offset: no new hole
    counter.step([LogEvent(0, i, clap(user=f"u{i}", clap_id=str(i))) for i in (1, 2)])
    assert counter.holes == {} and articles["a"] == ArticleTally(3, 2)


def test_a_hole_retention_deleted_is_skipped_and_counting_goes_on_from_the_log_start():
    counter, articles = hole_guarded_counter({0: 10})
    counter.step([LogEvent(0, 7, clap(user="late", clap_id="x"))])
    assert counter.holes == {0: 0}
    counter.read_from(0, 7)  # offsets 0-6 are gone from the log
    assert counter.holes == {}
    counter.step([LogEvent(0, i, clap(user=f"u{i}", clap_id=str(i))) for i in range(7, 10)])
    assert articles["a"] == ArticleTally(3, 9)


def test_a_reassigned_partition_expects_the_offset_it_is_read_from_then():
    counter, articles = hole_guarded_counter({0: 10})
    counter.step([LogEvent(0, 0, clap())])
    counter.revoke(0)
    counter.assign(0, 10, next_offset=6)  # another worker committed up to 6 meanwhile
    counter.step([LogEvent(0, i, clap(user=f"u{i}", clap_id=str(i))) for i in range(6, 10)])
    assert counter.holes == {} and articles["a"] == ArticleTally(5, 9)


@st.composite
def lossy_deliveries(draw):
    """A log on two partitions and a delivery that drops runs of it, re-delivers old events and
    goes on delivering stale events for a while after it was asked to read again."""
    events = draw(logs())
    return events, random.Random(draw(st.integers(0, 2**32), label="delivery seed"))


@settings(max_examples=300, deadline=None)
@given(lossy_deliveries())
def test_whatever_a_delivery_skips_or_repeats_the_totals_equal_a_plain_recount(case):
    events, rng = case
    by_partition = {p: [e for e in events if e.partition == p] for p in (0, 1)}
    ends = {p: len(by_partition[p]) for p in (0, 1)}
    counter, articles = hole_guarded_counter(ends)
    position = {0: 0, 1: 0}  # where the fetcher reads next
    stale: list[LogEvent] = []  # fetched before a seek, still queued after it
    announced: dict[tuple[str, int], int] = {}
    for _ in range(400):
        if all(position[p] >= ends[p] for p in (0, 1)) and not stale and not counter.holes:
            for p in (0, 1):  # the log is read to its end and the delivery is idle
                counter.delivered_before(p, position[p])
            if not counter.holes:
                break
        batch = stale[: rng.randint(1, 5)]
        stale = stale[len(batch):]
        for p in (0, 1):
            take = rng.randint(0, 6)
            fetched = by_partition[p][position[p]:position[p] + take]
            position[p] += len(fetched)
            if fetched and rng.random() < 0.25:  # the queue is cleared: a run is lost
                cut = rng.randint(0, len(fetched) - 1)
                fetched = fetched[:cut]
            if rng.random() < 0.1:  # a seek back re-delivers a few
                position[p] = max(0, position[p] - rng.randint(1, 4))
            batch += fetched
        for update in counter.step(batch):
            assert announced.setdefault((update.article, update.seq), update.total) == update.total
        if not batch and not stale:  # an idle delivery: the adapter compares fetch positions
            for p in (0, 1):
                counter.delivered_before(p, position[p])
        for p, offset in counter.holes.items():  # the adapter reads again from the hole
            stale += by_partition[p][position[p]:position[p] + rng.randint(0, 3)]  # already fetched
            position[p] = offset
    assert all(position[p] >= ends[p] for p in (0, 1)) and not counter.holes
    assert {a: t.total for a, t in articles.items()} == expected_totals(events)
    assert counter.catching_up == {}


@given(st.floats(0.0, 1.0), st.floats(0.0, 0.3))
def test_batches_come_once_per_window_whatever_the_work_took_below_it(work_s, extra_s):
    window, wait, taken_at = 0.1, 0.05, 1000.0
    pause = pause_before_next_batch(window, wait, taken_at, taken_at + work_s, backlog=False)
    next_batch_at = taken_at + work_s + pause + wait
    if work_s <= window - wait:
        assert next_batch_at == pytest.approx(taken_at + window)  # paced to the window
    else:
        assert pause == 0.0  # the work was longer than the window allows: no pause on top
    # Behind the log, never a pause.
    assert pause_before_next_batch(window, wait, taken_at, taken_at + extra_s, backlog=True) == 0.0
