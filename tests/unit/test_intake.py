"""processor.intake: the bounded list between the consumer's fetch loop and the counting loop.

Driven with stand-ins for Faust's message, consumer and flow control, which the intake only
calls through the few methods below.
"""
from __future__ import annotations

import asyncio

import pytest

from processor.intake import ClapIntake


class Message:
    def __init__(self, offset: int, generation: int = 1) -> None:
        self.offset, self.generation_id = offset, generation
        self.refcount, self.acked = 0, False

    def incref(self) -> None:
        self.refcount += 1

    def ack(self, consumer: "Consumer") -> None:
        self.refcount -= 1
        if self.refcount == 0 and not self.acked:
            self.acked = True
            consumer.acked.append(self.offset)
            consumer._unacked_messages.discard(self)


class Consumer:
    def __init__(self) -> None:
        self._unacked_messages: set[Message] = set()
        self.acked: list[int] = []

    def track_message(self, message: Message) -> None:
        self._unacked_messages.add(message)


class Flow:
    def __init__(self) -> None:
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.generation = 1

    async def acquire(self) -> None:
        await self.resumed.wait()


def intake(maxsize: int = 10) -> tuple[ClapIntake, Consumer, Flow]:
    consumer, flow = Consumer(), Flow()
    made = ClapIntake("claps", maxsize, consumer=lambda: consumer, flow_acquire=flow.acquire,
                      flow_active=flow.resumed.is_set, generation=lambda: flow.generation)
    return made, consumer, flow


async def deliver(into: ClapIntake, offsets: range, generation: int = 1) -> list[Message]:
    messages = [Message(offset, generation) for offset in offsets]
    for message in messages:
        await into.deliver(message)
    return messages


async def test_a_full_batch_is_handed_over_at_once_and_a_partial_one_after_the_wait() -> None:
    claps, _, _ = intake()
    await deliver(claps, range(7))
    batches = claps.batches(max_batch=5, within=30.0)
    first = await asyncio.wait_for(batches.__anext__(), 1.0)  # 5 were waiting: no 30 s wait
    assert [m.offset for m in first] == [0, 1, 2, 3, 4]
    loop = asyncio.get_running_loop()
    started = loop.time()
    second = await claps.batches(max_batch=5, within=0.05).__anext__()
    assert [m.offset for m in second] == [5, 6]
    assert loop.time() - started >= 0.04


async def test_with_nothing_waiting_the_first_message_is_handed_over_when_it_comes() -> None:
    claps, _, _ = intake()
    taker = asyncio.ensure_future(claps.batches(max_batch=5, within=0.01).__anext__())
    await asyncio.sleep(0.05)  # the wait has ended with nothing to hand over
    assert not taker.done()
    await deliver(claps, range(1))
    batch = await asyncio.wait_for(taker, 1.0)
    assert [m.offset for m in batch] == [0]


async def test_a_batch_is_tracked_when_taken_and_committable_only_once_acked() -> None:
    claps, consumer, _ = intake()
    await deliver(claps, range(3))
    assert consumer._unacked_messages == set()  # waiting messages are not tracked: a rebalance drops them
    batch = claps.take(10)
    assert consumer._unacked_messages == set(batch)
    assert consumer.acked == []
    claps.ack(batch)
    assert consumer.acked == [0, 1, 2]
    assert consumer._unacked_messages == set()


async def test_a_released_batch_is_neither_acked_nor_waited_for() -> None:
    claps, consumer, _ = intake()
    await deliver(claps, range(3))
    batch = claps.take(10)
    claps.release(batch)
    assert consumer._unacked_messages == set()
    assert consumer.acked == []


async def test_a_full_intake_holds_the_fetch_loop_until_a_batch_is_taken() -> None:
    claps, _, _ = intake(maxsize=3)
    await deliver(claps, range(3))
    fourth = asyncio.ensure_future(claps.deliver(Message(3)))
    await asyncio.sleep(0.01)
    assert not fourth.done() and len(claps.pending) == 3
    assert [m.offset for m in claps.take(2)] == [0, 1]
    await asyncio.wait_for(fourth, 1.0)
    assert [m.offset for m in claps.pending] == [2, 3]


async def test_a_rebalance_clears_what_waits_and_drops_a_delivery_that_waited_for_room() -> None:
    claps, _, flow = intake(maxsize=2)
    await deliver(claps, range(2))
    waiting = asyncio.ensure_future(claps.deliver(Message(2)))
    await asyncio.sleep(0.01)
    flow.resumed.clear()  # the rebalance: flow suspended, queues cleared, a new generation
    claps.clear()
    flow.generation = 2
    await asyncio.wait_for(waiting, 1.0)
    assert list(claps.pending) == []  # the seek delivers offsets 0-2 again
    flow.resumed.set()
    again = await asyncio.wait_for(deliver(claps, range(2), generation=2), 1.0)
    assert claps.take(10) == again


async def test_a_delivery_waits_while_the_flow_is_suspended() -> None:
    claps, _, flow = intake()
    flow.resumed.clear()
    delivery = asyncio.ensure_future(claps.deliver(Message(0)))
    await asyncio.sleep(0.01)
    assert not delivery.done() and not claps.pending
    flow.resumed.set()
    await asyncio.wait_for(delivery, 1.0)
    assert [m.offset for m in claps.pending] == [0]


async def test_messages_of_an_older_generation_are_left_out_of_a_batch() -> None:
    claps, consumer, flow = intake()
    await deliver(claps, range(2), generation=1)
    flow.generation = 2
    newer = await deliver(claps, range(2, 4), generation=2)
    assert claps.take(10) == newer
    assert consumer._unacked_messages == set(newer)


def test_an_intake_holds_at_least_one_message() -> None:
    with pytest.raises(ValueError, match="at least one"):
        intake(maxsize=0)


async def test_each_batch_taken_names_its_partitions_once_for_the_liveness_check() -> None:
    consumer, flow = Consumer(), Flow()
    reported: list[set[str]] = []
    claps = ClapIntake("claps", 10, consumer=lambda: consumer, flow_acquire=flow.acquire,
                       flow_active=flow.resumed.is_set, generation=lambda: flow.generation,
                       taken_from=reported.append)
    messages = await deliver(claps, range(5))
    for message, tp in zip(messages, ["claps-0", "claps-1", "claps-0", "claps-2", "claps-1"]):
        message.tp = tp
    assert [m.offset for m in claps.take(3)] == [0, 1, 2]
    assert [m.offset for m in claps.take(3)] == [3, 4]
    assert claps.take(3) == []  # nothing taken, nothing reported
    assert reported == [{"claps-0", "claps-1"}, {"claps-2", "claps-1"}]


async def test_nothing_is_taken_until_a_rebalance_has_restored_the_tables() -> None:
    """Faust resumes the flow while it still reads the changelogs back: a message delivered then
    must wait, or it is counted on an empty tally (processor/intake.py)."""
    consumer, flow = Consumer(), Flow()
    rebalance = {"in_progress": True}
    claps = ClapIntake("claps", 10, consumer=lambda: consumer, flow_acquire=flow.acquire,
                       flow_active=flow.resumed.is_set, generation=lambda: flow.generation,
                       settled=lambda: not rebalance["in_progress"])
    flow.generation = 2
    delivered = await deliver(claps, range(3), generation=2)  # during the recovery's changelog reads
    taker = asyncio.ensure_future(claps.batches(max_batch=3, within=0.01).__anext__())
    await asyncio.sleep(0.1)
    assert not taker.done() and consumer._unacked_messages == set()  # not taken, not tracked
    rebalance["in_progress"] = False  # the recovery has read the changelogs back into the tables
    assert await asyncio.wait_for(taker, 1.0) == delivered


async def test_a_taker_waiting_through_a_second_rebalance_gets_only_its_deliveries() -> None:
    consumer, flow = Consumer(), Flow()
    rebalance = {"in_progress": True}
    claps = ClapIntake("claps", 10, consumer=lambda: consumer, flow_acquire=flow.acquire,
                       flow_active=flow.resumed.is_set, generation=lambda: flow.generation,
                       settled=lambda: not rebalance["in_progress"])
    await deliver(claps, range(2), generation=1)
    taker = asyncio.ensure_future(claps.batches(max_batch=2, within=0.01).__anext__())
    await asyncio.sleep(0.05)
    claps.clear()  # another rebalance: flow control empties the list, a new generation, and
    flow.generation = 2  # its seek delivers offsets 0-1 again
    newer = await deliver(claps, range(2), generation=2)
    rebalance["in_progress"] = False
    assert await asyncio.wait_for(taker, 1.0) == newer
