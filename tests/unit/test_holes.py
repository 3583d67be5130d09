"""The hole rereader (processor/holes.py) against a consumer whose answers a rebalance can overtake.

The consumer here is a stand-in for the three calls the rereader makes of Faust's consumer; the
real one is driven in tests/integration (a delivery skipped mid-stream and at its end).
"""
from __future__ import annotations

import asyncio

from aiokafka.errors import IllegalStateError
from faust.types import TP

from core.ledger import ArticleTally, UserClaps
from core.messages import ClapRecorded
from core.processing import ClapCounter, LogEvent
from processor.holes import HoleRereader

TOPIC = "claps"


class Consumer:
    def __init__(self, assigned: set[int]) -> None:
        self.assigned = set(assigned)
        self.seeks: list[tuple[int, int]] = []
        self.earliest = 0
        self.fetched_to: int | None = None  # the fetcher's position, for the tail looks
        self.while_answering = lambda: None  # what happens while the broker answers a lookup

    async def earliest_offsets(self, *partitions: TP) -> dict[TP, int]:
        await asyncio.sleep(0)
        self.while_answering()
        return {tp: self.earliest for tp in partitions}

    async def position(self, tp: TP) -> int | None:
        return self.fetched_to

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        for tp, offset in partitions.items():
            if tp.partition not in self.assigned:
                raise IllegalStateError(f"No current assignment for partition {tp}")
            self.seeks.append((tp.partition, offset))


def counter_with_a_hole(partition: int, hole_at: int) -> ClapCounter:
    users: dict[str, UserClaps] = {}
    articles: dict[str, ArticleTally] = {}
    counter = ClapCounter(users, articles, epoch=1, offsets_without_holes=True)
    counter.assign(partition, end_offset=0, next_offset=0)
    events = [LogEvent(partition, offset, ClapRecorded("a1", f"u{offset}", 1, f"c{offset}", 1_000))
              for offset in range(hole_at)]
    past_the_hole = LogEvent(partition, hole_at + 3, ClapRecorded("a1", "late", 1, "late", 1_000))
    counter.step([*events, past_the_hole])
    assert counter.holes == {partition: hole_at}
    return counter


def rereader(counter: ClapCounter, consumer: Consumer, now: list[float], gave_up: list[bool]) -> HoleRereader:
    return HoleRereader(counter, TOPIC, lambda: consumer, rebalancing=lambda: False, clock=lambda: now[0],
                        give_up=lambda: gave_up.append(True))


async def test_a_hole_is_sought_back_to_at_most_once_a_second_until_it_is_filled():
    counter = counter_with_a_hole(8, 5)
    consumer, now, gave_up = Consumer({8}), [100.0], []
    holes = rereader(counter, consumer, now, gave_up)
    await holes.reread()
    now[0] += 0.5
    await holes.reread()
    now[0] += 0.6
    await holes.reread()
    assert consumer.seeks == [(8, 5), (8, 5)]
    counter.step([LogEvent(8, offset, ClapRecorded("a1", f"v{offset}", 1, f"d{offset}", 1_000)) for offset in range(5, 9)])
    await holes.reread()
    assert counter.holes == {} and holes.first_seen == {} and consumer.seeks == [(8, 5), (8, 5)]
    assert gave_up == []


async def test_a_partition_revoked_while_the_broker_answers_is_not_sought_and_the_worker_goes_on():
    # Seen in `make chaos` (broker-stall): the rebalance a stalled coordinator caused revoked
    # partition 8 while the rereader waited for its earliest offset; the seek then raised and
    # ended the worker.
    counter = counter_with_a_hole(8, 5)
    consumer, now, gave_up = Consumer({8}), [100.0], []

    def rebalance() -> None:
        consumer.assigned.discard(8)
        counter.revoke(8)

    consumer.while_answering = rebalance
    holes = rereader(counter, consumer, now, gave_up)
    await holes.reread()
    assert consumer.seeks == [] and gave_up == []
    now[0] += 2
    await holes.reread()  # the hole went with the partition
    assert holes.first_seen == {} and consumer.seeks == []


async def test_a_seek_refused_because_the_partition_is_no_longer_assigned_is_not_a_failure():
    # The rebalance lands between the last look at the counter and the seek in the consumer's
    # thread: the consumer refuses, and the counter learns of the revoke just after.
    counter = counter_with_a_hole(8, 5)
    consumer, now, gave_up = Consumer(set()), [100.0], []
    holes = rereader(counter, consumer, now, gave_up)
    await holes.reread()
    assert consumer.seeks == [] and gave_up == []
    counter.revoke(8)
    now[0] += 2
    await holes.reread()
    assert holes.first_seen == {}


async def test_a_hole_that_stays_open_past_the_limit_gives_up_before_any_commit():
    counter = counter_with_a_hole(8, 5)
    consumer, now, gave_up = Consumer({8}), [100.0], []
    holes = rereader(counter, consumer, now, gave_up)
    await holes.reread()
    now[0] += HoleRereader.give_up_after_s + 1
    await holes.reread()
    assert gave_up == [True]


async def test_a_hole_that_retention_deleted_is_skipped_and_reading_goes_on_from_the_log_start():
    counter = counter_with_a_hole(8, 5)
    consumer, now, gave_up = Consumer({8}), [100.0], []
    consumer.earliest = 7
    holes = rereader(counter, consumer, now, gave_up)
    await holes.reread()
    assert consumer.seeks == [(8, 7)]
    assert counter.expected_offsets[8] == 7 and counter.holes == {}


async def test_a_hole_at_the_tail_is_found_once_the_counting_has_stood_still_for_two_looks():
    users: dict[str, UserClaps] = {}
    counter = ClapCounter(users, {}, epoch=1, offsets_without_holes=True)
    counter.assign(3, end_offset=10, next_offset=4)  # a takeover: 4-9 fetched, then dropped
    consumer, now, gave_up = Consumer({3}), [100.0], []
    consumer.fetched_to = 10
    holes = rereader(counter, consumer, now, gave_up)
    await holes.look_at_the_tail()
    await holes.look_at_the_tail()
    assert consumer.seeks == [] and counter.holes == {}  # not yet: a loop may stall this long
    await holes.look_at_the_tail()
    assert counter.holes == {3: 4} and consumer.seeks == [(3, 4)]


async def test_counting_that_moves_between_looks_is_no_hole():
    counter = ClapCounter({}, {}, epoch=1, offsets_without_holes=True)
    counter.assign(3, end_offset=10, next_offset=4)
    consumer, now, gave_up = Consumer({3}), [100.0], []
    consumer.fetched_to = 10
    holes = rereader(counter, consumer, now, gave_up)
    for offset in range(4, 8):
        await holes.look_at_the_tail()
        counter.step([LogEvent(3, offset, ClapRecorded("a1", f"u{offset}", 1, f"c{offset}", 1_000))])
    assert counter.holes == {} and consumer.seeks == []
