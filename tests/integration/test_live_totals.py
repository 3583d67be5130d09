"""The load tool's follower of the fan-out topic, against a real broker: it starts at the topic's
end (nothing announced before the run counts), skips counting statuses and bad records, and keeps
each article's newest total by position."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from core.messages import CountChanged
from loadtest.live_totals import LiveTotals, follow
from tests.contract.conftest import BOOTSTRAP, create_topic

pytestmark = pytest.mark.services


async def test_the_follower_reads_from_the_end_and_keeps_the_newest_total_per_article(real_services):
    name = f"live-{uuid.uuid4().hex[:8]}"
    await create_topic(name)
    topic = f"{name}-counts"
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    live, started = LiveTotals(), asyncio.Event()
    following = None
    try:
        await producer.send_and_wait(topic, CountChanged("before", 9, 9, 5, 1, 0).to_json(), key=b"before")
        following = asyncio.ensure_future(follow(BOOTSTRAP, topic, live, started))
        await asyncio.wait_for(started.wait(), 30)
        for total, seq in ((3, 10), (7, 20), (5, 15)):  # the last one is older: not taken
            await producer.send_and_wait(topic, CountChanged("a", total, 1, seq, 1, 0).to_json(), key=b"a")
        await producer.send_and_wait(topic, b'{"type": "no such record"}', key=b"a")
        await producer.send_and_wait(topic, CountChanged("b", 2, 2, 3, 1, 0).to_json(), key=b"b")
        deadline = asyncio.get_running_loop().time() + 30
        while "b" not in live.newest and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert {article: t.total for article, t in live.newest.items()} == {"a": 7, "b": 2}
        at, behind = live.settled_at({"a": 7, "b": 2})
        assert behind == [] and at == max(live.changed_at["a"], live.changed_at["b"])
    finally:
        if following is not None:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        await producer.stop()
