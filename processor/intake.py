"""Fetched claps handed to the counting loop in batches, past Faust's per-event streams.

Faust hands each fetched message to an agent through a channel: an ``Event`` made for it, a
queue put and get, a step of the stream iterator with its sensors and its ack, and a place in
``take_events``' buffer. py-spy put that at 40 % of a worker counting a backlog, more than the
counting itself (docs/BENCHMARKS.md §4.7). The counter needs none of it: it takes a batch of
(partition, offset, bytes) and acks the batch once its state and totals are durable.

``ClapIntake`` is that path for one topic. The consumer's fetch loop appends each message to a
bounded list; the counting loop takes up to ``max_batch`` of them when the list is full or
``within`` seconds after it asked, as ``take_events`` does. What Faust gives every stream is
kept:

- the subscription, the commits and the rebalances are Faust's, through the same consumer;
- flow control: a delivery waits while a rebalance has the flow suspended, and the flow's
  ``clear()`` empties the list as it empties the streams' queues; a message of an older consumer
  generation is left out when a batch is taken, as the streams leave it out. Nothing fetched
  before a rebalance is counted after it: the rebalance's seek reads it again;
- tracking and acks: a batch is tracked when it is taken, so a rebalance's ``wait_empty`` waits
  for the batch being counted; the messages the counter applied are acked after the batch's state
  is durable, and the rest released, so offsets are committed only past durable state;
- back-pressure: a full list makes the fetch loop wait, as a full stream queue does.

A message that waited for room while a rebalance came is dropped, not appended, for the same
reason.

- liveness: each batch taken tells ``taken_from`` its partitions, which the app passes on to
  Faust's monitor as a stream would (``stream_inbound_time``). Faust's consumer checks that a
  partition it fetches for is being processed; without this, a worker that counted every clap
  logged "Stream has not started processing" at ERROR every few minutes.
- nothing is taken while a rebalance's recovery reads the changelogs back (``settled``): Faust
  resumes the flow *before* it has read them into the tables (it reads them through the same
  fetch loop), so messages fetched for a newly assigned partition can reach this list while its
  tables are still empty. Counted then, a clap read an empty tally and wrote back a total without
  the claps before it, which the partition's next owner restored: acked claps lost from the
  count (found by the backlog-rebalance test under a loaded CI run: 7 articles short by 300-420
  claps each, all on the two partitions a worker had been counting during its recovery). Taken
  after the recovery, they are counted on the restored tables; one fetched before yet another
  rebalance is left out by its generation, as above.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Awaitable
from typing import Any

Message = Any  # faust.types.Message; kept loose so that this module's tests need no Faust app


class ClapIntake:
    """A bounded list of fetched messages of one topic, taken in batches by one loop."""

    #: How often a taker waiting for a recovery to end looks again (Faust signals no event for it).
    settle_poll_s = 0.02

    def __init__(self, topic: str, maxsize: int, *, consumer: Callable[[], Any], flow_acquire: Callable[[], Awaitable[None]],
                 flow_active: Callable[[], bool], generation: Callable[[], int | None],
                 taken_from: Callable[[set[Any]], None] | None = None,
                 settled: Callable[[], bool] = lambda: True) -> None:
        if maxsize < 1:
            raise ValueError(f"an intake holds at least one message, not {maxsize}")
        self.topic = topic
        self.maxsize = maxsize
        self.pending: deque[Message] = deque()
        self._consumer = consumer
        self._flow_acquire = flow_acquire
        self._flow_active = flow_active
        self._generation = generation
        self._taken_from = taken_from
        self._settled = settled
        self._want = 1  # how many waiting messages wake the taker
        self._enough = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def clear(self) -> None:
        """Forget what waits (called by Faust's flow control at a rebalance)."""
        self.pending.clear()
        self._room.set()

    async def deliver(self, message: Message) -> None:
        """The consumer's callback for a message of this topic."""
        await self._flow_acquire()
        while len(self.pending) >= self.maxsize:
            self._room.clear()
            await self._room.wait()
            if not self._flow_active() or message.generation_id != self._generation():
                return  # a rebalance came meanwhile; its seek delivers this message again
        message.incref()
        self.pending.append(message)
        if len(self.pending) >= self._want:
            self._enough.set()

    def take(self, most: int) -> list[Message]:
        """Up to ``most`` waiting messages, oldest first, tracked by the consumer.

        A message fetched before the consumer's latest rebalance is left out, as Faust's
        streams leave it out: the rebalance's seek delivers it again."""
        pending = self.pending
        count = min(most, len(pending))
        generation = self._generation()
        batch = [message for message in (pending.popleft() for _ in range(count)) if message.generation_id == generation]
        if len(pending) < self.maxsize:
            self._room.set()
        track = self._consumer().track_message
        for message in batch:
            track(message)
        if batch and self._taken_from is not None:
            self._taken_from({message.tp for message in batch})
        return batch

    def ack(self, batch: list[Message]) -> None:
        """The batch is durable: its offsets may be committed."""
        consumer = self._consumer()
        for message in batch:
            message.ack(consumer)

    def release(self, batch: list[Message]) -> None:
        """The messages of ``batch`` not acked (not counted: past a hole, or the counting failed
        or was cancelled): the consumer stops waiting for them, and their offsets stay
        uncommitted until they come again and are counted."""
        unacked = self._consumer()._unacked_messages  # Faust's set of tracked messages; no public way out
        for message in batch:
            if not message.acked:
                unacked.discard(message)

    async def batches(self, max_batch: int, within: float) -> AsyncIterator[list[Message]]:
        """Batches of at most ``max_batch``: each as soon as that many wait, else ``within``
        seconds after it was asked for, or, if none had come by then, with the first that comes.
        The caller acks each batch (``ack``) before it asks for the next."""
        while True:
            if len(self.pending) < max_batch:
                await self._wait_for(max_batch, within)
            if not self.pending:
                await self._wait_for(1, None)
            while not self._settled():  # a recovery: the tables may not hold their state yet
                await asyncio.sleep(self.settle_poll_s)
            if self.pending:  # a rebalance may have cleared the list meanwhile
                yield self.take(max_batch)

    async def _wait_for(self, count: int, timeout: float | None) -> None:
        self._want = count
        self._enough.clear()
        try:
            await asyncio.wait_for(self._enough.wait(), timeout)
        except asyncio.TimeoutError:
            pass
