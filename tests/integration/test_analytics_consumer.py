"""The example analytics consumer (loadtest/analytics.py) counts what the service counts.

Claps go into the run's clap topic the way gateways write them (the Kafka clap log adapter),
including a repeated id, a user past the cap, an event carrying a field added later within v1,
and records an analytics consumer must reject. The processor and projector count them into
Cassandra; the consumer, in a group of its own from offset 0, must arrive at the same totals.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from core.messages import ClapRecorded
from gateway.kafka_adapters import KafkaClapLog
from loadtest.analytics import consume
from tests.support.pipeline import cassandra_total

pytestmark = pytest.mark.services


async def test_the_analytics_consumer_counts_exactly_what_the_store_holds(pipeline):
    env = pipeline.env
    tag = uuid.uuid4().hex[:6]
    articles = [f"an-{tag}-{i}" for i in range(3)]
    log = KafkaClapLog(env["KAFKA_BOOTSTRAP"], env["CLAP_TOPIC"])
    await log.start()
    try:
        for a_index, article in enumerate(articles):
            for user in range(4):
                for batch in range(3):
                    count = 7 + a_index + 3 * user  # users 2 and 3 pass the cap of 50
                    await log.append(ClapRecorded(article, f"u{user}", count, f"{article}-{user}-{batch}", 1))
        # A client retry that reached the log twice: counts once.
        await log.append(ClapRecorded(articles[0], "u0", 7, f"{articles[0]}-0-0", 2))
    finally:
        await log.close()
    expected = {article: sum(min(3 * (7 + a + 3 * u), 50) for u in range(4)) for a, article in enumerate(articles)}

    producer = AIOKafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP"], acks="all")
    await producer.start()
    try:
        key = articles[1].encode()
        # A field added within v1 (allowed by the evolution rules): counted, not rejected.
        newer = (b'{"v":1,"type":"clap","article":"%s","user":"u9","count":4,"id":"later-field","at":3,'
                 b'"client":"ios"}' % key)
        await producer.send_and_wait(env["CLAP_TOPIC"], newer, key=key)
        await producer.send_and_wait(env["CLAP_TOPIC"], b"not json at all", key=key)
        await producer.send_and_wait(env["CLAP_TOPIC"], b'{"v":2,"type":"clap"}', key=key)
        # Out of the schema's range; on an article of its own (the processor's handling of such
        # an event is its own business, see the report), so it cannot blur the comparison.
        odd = f"an-{tag}-odd".encode()
        await producer.send_and_wait(
            env["CLAP_TOPIC"], b'{"v":1,"type":"clap","article":"%s","user":"u9","count":99,"id":"x","at":1}' % odd, key=odd)
    finally:
        await producer.stop()
    expected[articles[1]] += 4

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stored = {a: (await asyncio.to_thread(cassandra_total, pipeline.keyspace, a) or (0, 0))[0] for a in articles}
        if stored == expected:
            break
        await asyncio.sleep(0.5)
    assert stored == expected

    counts = await consume(env["KAFKA_BOOTSTRAP"], env["CLAP_TOPIC"], f"analytics-{tag}", start="earliest", max_s=120)
    assert {a: counts.totals.get(a) for a in articles} == stored
    mine = [r for r in counts.rejected if r.reason.startswith(("not JSON", "unknown version", "count"))]
    reasons = sorted(r.reason for r in mine)
    assert reasons == ["count: 99 is greater than the maximum of 50", "not JSON", "unknown version v=2"]
