"""The lag tool's sum of unread records per topic."""
from __future__ import annotations

from aiokafka.structs import TopicPartition

from core.messages import CountChanged
from loadtest.lag import CountedPositions, lag_per_topic


def test_unread_records_are_summed_per_topic_and_never_negative():
    claps0, claps1, counts0 = TopicPartition("claps", 0), TopicPartition("claps", 1), TopicPartition("counts", 0)
    committed = {claps0: 100, claps1: 40, counts0: 7}
    ends = {claps0: 150, claps1: 40, counts0: 5}  # a stale end offset reads as no lag, not minus two
    assert lag_per_topic(committed, ends) == {"claps": 50, "counts": 0}
    assert lag_per_topic({claps0: 3}, {}) == {"claps": 0}


def test_the_counted_position_of_a_partition_is_its_highest_announced_seq_of_the_newest_epoch():
    positions = CountedPositions(12)
    a = "article-a"
    partition_a = positions.partition_of(a.encode())
    b = next(f"article-{i}" for i in range(100) if positions.partition_of(f"article-{i}".encode()) != partition_a)
    partition_b = positions.partition_of(b.encode())
    positions.see(CountChanged(a, 5, 1, 40, 1, 0))
    positions.see(CountChanged(a, 4, 1, 30, 1, 0))  # an older total, read later: no step back
    positions.see(CountChanged(b, 2, 2, 7, 1, 0))
    assert positions.lag({partition_a: 100, partition_b: 7}) == 60
    positions.see(CountChanged(a, 9, 9, 12, 2, 0))  # a rebuild's epoch: positions start again
    assert positions.lag({partition_a: 100, partition_b: 7}) == 88
    # Partitions never announced are not guessed at; a stale end offset is no negative lag.
    never_announced = next(p for p in range(12) if p not in (partition_a, partition_b))
    assert positions.lag({partition_a: 10, never_announced: 1_000}) == 0
