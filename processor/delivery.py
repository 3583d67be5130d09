"""Faust's consumer, with each fetched message handed to its streams without two tasks of its own.

Faust's fetcher loop (``Consumer._drain_messages``) delivers every message through
``wait_first(callback(message), suspend_flow.wait())``: two tasks and an ``asyncio.wait`` per
message, so that a rebalance that suspends the flow never leaves the loop stuck behind a
delivery. py-spy put that wrapper at 15 % of a worker counting a backlog, more than the
counting itself. ``DirectDeliveryConsumer`` awaits the delivery directly while the flow runs and
keeps Faust's wrapper for when it is suspended. Read offsets, gaps, commits and the stop
conditions are Faust's own, with one addition: Faust's wrapper returned as soon as a rebalance
suspended the flow, so the fetch loop recorded a message's read offset before the rebalance's seek
reset it. A delivery awaited directly returns after the seek; if a rebalance came meanwhile (the
consumer's generation changed), the loop records nothing and drops the rest of that stale fetch,
as Faust's own fetch does once it sees the generation change. Recording it would make the loop skip
the records the seek asked for again. (Found by the scale-up-and-down test, which lost a delivery
of 12 claps this way once in a loaded full run.)

A delivery awaited directly can still wait: for a full stream buffer (back-pressure, as in Faust),
or, if a rebalance suspends the flow meanwhile, until the flow resumes. Faust's recovery resumes
the flow before it reads the changelogs through this same loop, so that wait ends on its own;
and a stop cancels the loop as before.

One more change: Faust's loop marks a jump in a topic's offsets as a gap, and counts a gap as
acknowledged when it commits, for compacted and transactional topics whose offsets do have holes.
The clap topic has none; a jump there is records fetched and not delivered (cleared by a
rebalance, or taken past the hole rereader's seek), and marking it let a commit pass claps nobody
had counted: a new owner then never read them (found by the backlog-rebalance test once the
counting got faster). Topics with an intake are never marked.

Install it with ``DirectDeliveryApp`` in place of ``faust.App``. Its ``intake`` takes a topic's
messages past the streams altogether, in batches (processor/intake.py).

Three more lookups per message go: ``RawBytesSchema`` is the topic schema of bytes in and bytes
out (Faust's raw codec looks up the app's settings and its codec registry for every key and value,
5 % of the same profile, to return the bytes it was given); the app resolves its event class once,
not from its settings per message (2 %); and the producer buffer, which the delivery asks for its
size before every message, counts its queue without asking the settings whether it is threaded
(3 %).
"""
from __future__ import annotations

import asyncio
from functools import cached_property
from time import monotonic
from typing import Any, cast

import faust
from faust.transport import base as transport_base
from faust.transport.conductor import Conductor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.transport.producer import ProducerBuffer
from mode import Service

from processor.intake import ClapIntake


class RawBytesSchema(faust.Schema):
    """Keys and values as the bytes on the log; sends as Faust's raw serializer."""

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def loads_key(self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None) -> Any:
        return message.value


class DirectDeliveryConsumer(aiokafka_driver.Consumer):
    async def _drain_messages(self, fetcher: Any) -> None:  # a copy of Faust's, but for the marked lines
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        flow_suspended = self.suspend_flow.is_set  # added
        app = self.app  # added

        def generation() -> int:  # added
            return app.consumer_generation_id

        # Topics whose offsets have no holes (no compaction, no transactions): a jump in their
        # offsets is records fetched and not delivered (cleared at a rebalance, or taken past a
        # seek), never offsets that do not exist, so it must not be marked a gap: Faust counts a
        # gap as acknowledged and would commit past records nobody counted.
        gapless = set(getattr(app, "intakes", ()))  # added
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)  # getmany may not yield to the loop
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic) and message.topic not in gapless:  # changed
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if flow_suspended():  # changed: Faust's wrapper only while the flow is suspended
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            else:
                                await callback(message)
                                if message.generation_id != generation():  # added
                                    # A rebalance came while the delivery waited, and its seek set
                                    # the read offsets anew: this fetch is stale. Setting the read
                                    # offset now would make the loop drop the records the seek
                                    # asked for again (a skipped delivery the counter cannot see
                                    # if it already expects a later offset).
                                    break
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class UnthreadedProducerBuffer(ProducerBuffer):
    @property
    def size(self) -> int:
        return self.pending.qsize()  # what Faust's size counts when the producer is not threaded


class DirectDeliveryProducer(aiokafka_driver.Producer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.app.conf.producer_threaded:
            self.buffer.__class__ = UnthreadedProducerBuffer  # the same buffer, one lookup less


class IntakeConductor(Conductor):
    """Faust's conductor, but a topic with an intake is delivered to it, not to channels."""

    def _build_handler(self, tp: Any, channels: Any) -> Any:
        intake = cast(DirectDeliveryApp, self.app).intakes.get(tp.topic)
        if intake is not None:
            return intake.deliver
        return super()._build_handler(tp, channels)


class DirectDeliveryTransport(aiokafka_driver.Transport):
    Consumer = DirectDeliveryConsumer
    Producer = DirectDeliveryProducer
    Conductor = IntakeConductor


class DirectDeliveryApp(faust.App):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.intakes: dict[str, ClapIntake] = {}

    def _new_transport(self) -> transport_base.Transport:
        return DirectDeliveryTransport(self.conf.broker_consumer, self)

    def intake(self, topic: faust.TopicT, maxsize: int) -> ClapIntake:
        """Subscribe ``topic`` with its messages delivered to a ``ClapIntake``, not to a stream."""
        (name,) = topic.topics
        intake = ClapIntake(name, maxsize, consumer=lambda: self.consumer, flow_acquire=self.flow_control.acquire,
                            flow_active=self.flow_control.is_active,
                            generation=lambda: self.consumer_generation_id, taken_from=self._processing,
                            settled=self._settled)
        self.intakes[name] = intake  # also the strong reference flow control's weak set needs
        self.flow_control.manage_queue(cast(Any, intake))
        self.topics.add(topic)
        return intake

    def _settled(self) -> bool:
        """The tables hold their state: Faust's recovery is not reading changelogs back.

        Faust sets ``in_recovery`` when a rebalance's recovery starts (before it resumes the
        flow) and clears it once the changelogs are read and its buffers applied. Waiting for
        the whole rebalance instead ("Worker ready", ``rebalancing``) held claps fetched between
        the seek to the committed offsets and the end of the rebalance until the tail-hole
        look found them missing: a takeover took 5.1-5.7 s instead of 3.2-3.8 (paired runs of
        ``loadtest.recovery``, docs/RELIABILITY.md)."""
        return not self.in_recovery

    def _processing(self, partitions: set[Any]) -> None:
        """Partitions whose messages the counting loop just took: marked as a stream marks them
        in Faust's monitor, whose inbound times Faust's consumer reads to tell a partition
        being processed from one that is stuck (``verify_event_path``)."""
        monitor = self.monitor
        if monitor is None:
            return
        now = monotonic()
        for tp in partitions:
            monitor.stream_inbound_time[tp] = now

    @cached_property
    def _event_class(self) -> Any:
        return self.conf.Event

    def create_event(self, key: Any, value: Any, headers: Any, message: Any) -> Any:
        return self._event_class(self, key, value, headers, message)
