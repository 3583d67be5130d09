"""The lag tool's sum of unread records per topic."""
from __future__ import annotations

from aiokafka.structs import TopicPartition

from loadtest.lag import lag_per_topic


def test_unread_records_are_summed_per_topic_and_never_negative():
    claps0, claps1, counts0 = TopicPartition("claps", 0), TopicPartition("claps", 1), TopicPartition("counts", 0)
    committed = {claps0: 100, claps1: 40, counts0: 7}
    ends = {claps0: 150, claps1: 40, counts0: 5}  # a stale end offset reads as no lag, not minus two
    assert lag_per_topic(committed, ends) == {"claps": 50, "counts": 0}
    assert lag_per_topic({claps0: 3}, {}) == {"claps": 0}
