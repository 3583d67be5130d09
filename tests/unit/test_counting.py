"""core.counting: whether readers' counts are live, from the processor's statuses and its silence."""
from __future__ import annotations

import orjson
import pytest

from core.counting import SAID_CATCHING_UP, SILENT, CountingWatch, Lapse, counting_frame, counting_states
from core.messages import CATCHING_UP, LIVE, CountChanged, CountingStatus, decode_fan_out
from core.routing import shard_of

PARTITIONS = 4


def article_on(partition: int, nth: int = 0) -> str:
    """The ``nth`` article id (of the form art-N) whose fan-out partition is ``partition``."""
    found = [f"art-{i}" for i in range(1_000) if shard_of(f"art-{i}", PARTITIONS) == partition]
    return found[nth]


A, A2, B = article_on(1), article_on(1, 1), article_on(2)


def live(partition: int, epoch: int = 1) -> CountingStatus:
    return CountingStatus(partition, LIVE, epoch)


def behind(partition: int, epoch: int = 1) -> CountingStatus:
    return CountingStatus(partition, CATCHING_UP, epoch)


# -- the processor's side ----------------------------------------------------------------------


def test_a_worker_says_catching_up_for_held_partitions_and_live_for_the_rest():
    assert counting_states({0, 3, 5}, held={3}) == {0: LIVE, 3: CATCHING_UP, 5: LIVE}


def test_a_worker_that_cannot_count_says_catching_up_for_every_partition_it_owns():
    assert counting_states([2, 1], held=(), counting=False) == {1: CATCHING_UP, 2: CATCHING_UP}


def test_a_worker_owning_nothing_says_nothing():
    assert counting_states([], held={1}) == {}


# -- the records and frames --------------------------------------------------------------------


def test_a_status_goes_round_the_fan_out_codec_beside_totals():
    status = CountingStatus(3, CATCHING_UP, 2)
    assert orjson.loads(status.to_json()) == {"v": 1, "type": "counting", "partition": 3, "state": "catching_up", "epoch": 2}
    assert decode_fan_out(status.to_json()) == status
    total = CountChanged("a", 10, 2, 4, 1, 99)
    assert decode_fan_out(total.to_json()) == total


def test_a_status_is_keyed_apart_from_every_article():
    assert CountingStatus(7, LIVE, 1).key == b"counting:7"


@pytest.mark.parametrize("raw", [
    b'{"v":1,"type":"counting","partition":1,"state":"asleep","epoch":1}',
    b'{"v":1,"type":"counting","partition":-1,"state":"live","epoch":1}',
    b'{"v":1,"type":"counting","partition":"1","state":"live","epoch":1}',
    b'{"v":1,"type":"counting","state":"live","epoch":1}',
    b'{"v":1,"type":"dance","article":"a","total":1,"seq":1}',
    b'[1]',
])
def test_a_fan_out_record_of_no_known_shape_is_refused(raw):
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode_fan_out(raw)


def test_the_frame_names_the_article_and_the_state():
    assert orjson.loads(counting_frame("a", CATCHING_UP)) == {"type": "counting", "article": "a", "state": "catching_up"}


# -- the gateway's side ------------------------------------------------------------------------


def test_a_partition_whose_worker_speaks_live_is_live():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    watch.open(A, now_ms=0)
    watch.heard(live(1), now_ms=1_000)
    assert watch.is_live(A, now_ms=5_999)
    assert watch.changes(now_ms=5_999) == []


def test_a_partition_turns_catching_up_when_its_worker_says_so_and_live_when_it_says_live_again():
    watch = CountingWatch(PARTITIONS)
    watch.open(A, now_ms=0)
    watch.heard(live(1), now_ms=100)
    watch.heard(behind(1), now_ms=1_100)
    assert not watch.is_live(A, now_ms=1_100)
    assert watch.changes(now_ms=1_100) == [(A, CATCHING_UP)]
    watch.heard(live(1), now_ms=9_000)
    assert watch.changes(now_ms=9_000) == [(A, LIVE)]


def test_silence_for_stale_ms_is_catching_up_and_the_next_status_brings_it_back():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    watch.open(A, now_ms=0)
    watch.heard(live(1), now_ms=1_000)
    assert watch.changes(now_ms=5_999) == []
    assert watch.changes(now_ms=6_000) == [(A, CATCHING_UP)]  # the worker died after 1_000
    assert watch.lapses(now_ms=7_000) == [Lapse(1, 6_000, SILENT, 1)]
    watch.heard(behind(1), now_ms=20_000)  # a new worker replays the partition
    assert watch.changes(now_ms=20_000) == []  # still catching up: nothing to tell
    assert watch.lapses(now_ms=20_000) == [Lapse(1, 6_000, SAID_CATCHING_UP, 1)]
    watch.heard(live(1), now_ms=21_000)
    assert watch.changes(now_ms=21_000) == [(A, LIVE)]
    assert watch.lapses(now_ms=21_000) == []


def test_every_room_of_a_partition_is_told_once_per_transition_and_other_partitions_are_not():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    for article in (A, A2, B):
        watch.open(article, now_ms=0)
    watch.heard(live(1), now_ms=0)
    watch.heard(live(2), now_ms=0)
    watch.heard(live(2), now_ms=4_000)
    assert sorted(watch.changes(now_ms=5_000)) == sorted([(A, CATCHING_UP), (A2, CATCHING_UP)])
    assert watch.changes(now_ms=5_500) == []  # told once, not once per look
    assert (watch.told(A), watch.told(A2), watch.told(B)) == (CATCHING_UP, CATCHING_UP, LIVE)
    assert watch.lapses(now_ms=5_500) == [Lapse(1, 5_000, SILENT, 2)]


def test_a_partition_just_opened_is_live_until_stale_ms_passes_without_a_word():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    watch.open(A, now_ms=10_000)
    assert watch.changes(now_ms=14_999) == []
    assert watch.changes(now_ms=15_000) == [(A, CATCHING_UP)]


def test_a_status_for_a_partition_without_rooms_here_is_not_kept():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    watch.heard(behind(1), now_ms=0)
    watch.open(A, now_ms=1_000)
    assert watch.is_live(A, now_ms=1_000)  # what was said before the room opened is not known here


def test_a_closed_partition_is_forgotten_and_opens_again_with_a_fresh_grace():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    watch.open(A, now_ms=0)
    assert watch.changes(now_ms=5_000) == [(A, CATCHING_UP)]
    watch.close(A)
    assert watch.told(A) == LIVE and watch.lapses(now_ms=5_000) == []
    watch.open(A, now_ms=6_000)
    assert watch.told(A) == LIVE and watch.changes(now_ms=6_000) == []


def test_closing_one_room_keeps_the_partitions_other_rooms_and_what_they_were_told():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    watch.open(A, now_ms=0)
    watch.open(A2, now_ms=0)
    assert len(watch.changes(now_ms=5_000)) == 2
    watch.close(A)
    watch.close(A)  # idempotent
    assert watch.told(A2) == CATCHING_UP
    assert watch.lapses(now_ms=5_000) == [Lapse(1, 5_000, SILENT, 1)]


def test_during_a_rebuild_the_live_epoch_keeps_the_partition_live():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    watch.open(A, now_ms=0)
    for second in range(10):  # epoch 2 replays from offset 0 while epoch 1 counts
        watch.heard(live(1, epoch=1), now_ms=second * 1_000)
        watch.heard(behind(1, epoch=2), now_ms=second * 1_000 + 10)
        assert watch.changes(now_ms=second * 1_000 + 20) == []


def test_the_rebuilds_epoch_takes_over_when_the_retired_epoch_falls_silent():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    watch.open(A, now_ms=0)
    watch.heard(live(1, epoch=1), now_ms=0)
    watch.heard(live(1, epoch=2), now_ms=1_000)
    for second in range(2, 12):  # epoch 1 retired after 0; epoch 2 goes on
        watch.heard(live(1, epoch=2), now_ms=second * 1_000)
        assert watch.changes(now_ms=second * 1_000) == []


def test_a_rebuild_still_catching_up_when_the_live_epoch_dies_is_catching_up():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    watch.open(A, now_ms=0)
    watch.heard(live(1, epoch=1), now_ms=0)
    watch.heard(behind(1, epoch=2), now_ms=4_000)
    assert watch.changes(now_ms=4_999) == []
    assert watch.changes(now_ms=5_000) == [(A, CATCHING_UP)]
    assert watch.lapses(now_ms=5_000) == [Lapse(1, 5_000, SAID_CATCHING_UP, 1)]


def test_epochs_gone_silent_are_dropped_so_the_memory_per_partition_stays_bounded():
    watch = CountingWatch(PARTITIONS, stale_ms=5_000)
    watch.open(A, now_ms=0)
    for epoch in range(1, 1_001):
        watch.heard(live(1, epoch=epoch), now_ms=epoch * 5_000)
    assert len(watch._said[1]) == 1


def test_an_article_without_a_room_here_is_told_nothing_and_reads_as_told_live():
    watch = CountingWatch(PARTITIONS)
    assert watch.told(B) == LIVE
    assert watch.changes(now_ms=100_000) == []


def test_a_watch_needs_a_partition_and_a_positive_staleness():
    with pytest.raises(ValueError):
        CountingWatch(0)
    with pytest.raises(ValueError):
        CountingWatch(4, stale_ms=0)
