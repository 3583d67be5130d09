"""The Faust parts processor/delivery.py replaces give what Faust's own give: the bytes on the
log, the app's event, the producer buffer's size. (The fetch loop itself runs against real Kafka:
tests/integration/test_processor_backlog.py and every processor test.)"""
from __future__ import annotations

import faust
from faust.transport.producer import ProducerBuffer

from processor.delivery import DirectDeliveryApp, RawBytesSchema, UnthreadedProducerBuffer


def message(key: bytes, value: bytes) -> faust.types.Message:
    return faust.types.Message(topic="claps", partition=3, offset=17, timestamp=0.0, timestamp_type=0, headers=None,
                               key=key, value=value, checksum=None)


def new_app() -> DirectDeliveryApp:
    return DirectDeliveryApp("delivery-test", broker="kafka://127.0.0.1:1", web_enabled=False)


def test_the_raw_schema_hands_over_the_bytes_on_the_log():
    record = message(b"art1", b'{"x":1}')
    schema = RawBytesSchema()
    assert schema.loads_key(None, record) == b"art1"
    assert schema.loads_value(None, record) == b'{"x":1}'
    assert (schema.key_serializer, schema.value_serializer) == ("raw", "raw")


def test_the_app_makes_the_same_event_as_faust():
    app = new_app()
    record = message(b"k", b"v")
    ours = app.create_event(b"k", b"v", {}, record)
    faust_own = faust.App.create_event(app, b"k", b"v", {}, record)
    assert type(ours) is type(faust_own) is app.conf.Event
    assert (ours.key, ours.value, ours.message) == (faust_own.key, faust_own.value, faust_own.message)


def test_the_producer_buffer_counts_as_faust_does():
    app = new_app()
    buffer = app.producer.buffer
    assert type(buffer) is UnthreadedProducerBuffer
    for n in range(3):
        assert buffer.size == ProducerBuffer.size.fget(buffer) == n
        buffer.pending.put_nowait(object())  # a message waiting to be produced


class FakeConsumer:
    """What ``DirectDeliveryConsumer._drain_messages`` reads of its consumer, and nothing more."""

    consumer_stopped_errors = ()
    should_stop = False
    _commit_every = None
    _n_acked = 0

    def __init__(self, fetches, deliver) -> None:
        import asyncio
        from collections import defaultdict
        from types import SimpleNamespace

        self._stopped = asyncio.Event()
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())
        self.suspend_flow = asyncio.Event()
        self._read_offset = defaultdict(lambda: None)
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self.app = SimpleNamespace(consumer_generation_id=1, topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self.transport = SimpleNamespace(app=self.app)
        self.log = SimpleNamespace(info=lambda *a: None, exception=lambda *a: None)
        self.fetches = list(fetches)
        self.deliver = deliver
        self.delivered = []

    async def sleep(self, seconds):
        pass

    async def callback(self, message):
        self.delivered.append(message.offset)
        await self.deliver(self, message)

    async def getmany(self, timeout):
        if not self.fetches:
            self.fetcher._stopped.set()  # the loop ends after the fetches given
            return
        for message in self.fetches.pop(0):
            yield message.tp, message


def record(offset: int, generation: int) -> faust.types.Message:
    return faust.types.Message(topic="claps", partition=0, offset=offset, timestamp=0.0, timestamp_type=0, headers=None,
                               key=b"a", value=b"v", checksum=None, generation_id=generation)


def drain(consumer: FakeConsumer) -> None:
    import asyncio

    from processor.delivery import DirectDeliveryConsumer

    asyncio.run(DirectDeliveryConsumer._drain_messages(consumer, consumer.fetcher))


def test_the_fetch_loop_records_each_delivered_offset_while_the_flow_runs():
    async def deliver(consumer, message):
        pass

    consumer = FakeConsumer([[record(0, 1), record(1, 1)], [record(2, 1)]], deliver)
    drain(consumer)
    assert consumer.delivered == [0, 1, 2]
    assert consumer._read_offset[faust.types.TP("claps", 0)] == 2


def test_a_rebalance_during_a_delivery_leaves_the_read_offset_its_seek_set_and_drops_the_stale_fetch():
    tp = faust.types.TP("claps", 0)

    async def rebalance_while_delivering(consumer, message):
        if message.offset == 7:  # the delivery waits (a full buffer) while a rebalance seeks back
            consumer.app.consumer_generation_id = 2
            consumer._read_offset[tp] = 5  # Faust's seek to the committed offset

    fetched_before = [record(7, 1), record(8, 1)]
    fetched_after = [record(5, 2), record(6, 2), record(7, 2)]
    consumer = FakeConsumer([fetched_before, fetched_after], rebalance_while_delivering)
    drain(consumer)
    # Offset 8 of the stale fetch is not delivered; the seek's records 5 and 6 are not dropped.
    assert consumer.delivered == [7, 5, 6, 7]
    assert consumer._read_offset[tp] == 7
