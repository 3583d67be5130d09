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
