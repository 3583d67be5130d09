"""The count feed port's follow contract, against every adapter: after ``followed(article)``
returns, every later total of the article is delivered, in order."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from core.messages import CATCHING_UP, CountChanged, CountingStatus
from core.routing import shard_of
from tests.contract.conftest import BOOTSTRAP, create_topic


@pytest.fixture(params=["embedded", "kafka-all-partitions", "kafka-followed-partitions"])
async def feed_pair(request) -> AsyncIterator[tuple[object, object]]:
    """(publisher, subscriber): the same object in one process, two clients of one topic otherwise."""
    if request.param == "embedded":
        from embedded.feed import InMemoryCountFeed

        feed = InMemoryCountFeed()
        yield feed, feed
        await feed.close()
        return
    request.getfixturevalue("real_services")
    from gateway.feed import PartitionedCountFeed
    from gateway.kafka_adapters import KafkaCountFeed

    topic = f"contract-follow-{uuid.uuid4().hex[:8]}"
    await create_topic(topic, partitions=6)
    publisher = KafkaCountFeed(BOOTSTRAP, f"{topic}-counts")
    cls = KafkaCountFeed if request.param == "kafka-all-partitions" else PartitionedCountFeed
    subscriber = cls(BOOTSTRAP, f"{topic}-counts")
    yield publisher, subscriber
    await subscriber.close()
    await publisher.close()


async def newest_of(updates, article: str, last: CountChanged, timeout_s: float = 20) -> list[CountChanged]:
    got: list[CountChanged] = []

    async def run() -> None:
        async for update in updates:
            if update.article == article:
                got.append(update)
                if update == last:
                    return

    await asyncio.wait_for(run(), timeout_s)
    return got


async def test_a_followed_article_gets_every_later_total_in_order(feed_pair):
    publisher, subscriber = feed_pair
    updates = await subscriber.subscribe()
    subscriber.follow("a")
    subscriber.follow("a")  # idempotent
    await subscriber.followed("a")
    totals = [CountChanged("a", seq * 3, 3, seq, 1, 0) for seq in range(1, 21)]
    others = [CountChanged(f"o{i}", i, i, 1, 1, 0) for i in range(20)]
    await publisher.publish(others + totals[:10])
    await publisher.publish(totals[10:])
    got = await newest_of(updates, "a", totals[-1])
    positions = [u.position() for u in got]
    assert positions == sorted(set(positions))  # in order, none twice (a feed may conflate)
    assert got[-1] == totals[-1] and all(u in totals for u in got)


async def test_unfollow_and_follow_again_delivers_totals_after_the_second_follow(feed_pair):
    publisher, subscriber = feed_pair
    updates = await subscriber.subscribe()
    subscriber.follow("b")
    await subscriber.followed("b")
    await publisher.publish([CountChanged("b", 1, 1, 1, 1, 0)])
    assert (await newest_of(updates, "b", CountChanged("b", 1, 1, 1, 1, 0)))[-1].seq == 1
    subscriber.unfollow("b")
    subscriber.unfollow("b")  # idempotent
    subscriber.follow("b")
    await subscriber.followed("b")
    last = CountChanged("b", 5, 4, 5, 1, 0)
    await publisher.publish([last])
    assert (await newest_of(updates, "b", last))[-1] == last


async def test_the_counting_status_of_a_followed_articles_partition_is_delivered(feed_pair):
    publisher, subscriber = feed_pair
    updates = await subscriber.subscribe()
    subscriber.follow("a")
    await subscriber.followed("a")
    # Published on the partition it names, which is the one a partitioned feed reads for "a".
    status = CountingStatus(shard_of("a", subscriber.partitions), CATCHING_UP, 1)
    await publisher.publish([CountChanged("a", 1, 1, 1, 1, 0), status])

    async def first_status() -> CountingStatus:
        async for update in updates:
            if isinstance(update, CountingStatus):
                return update
        raise AssertionError("the feed ended")

    assert await asyncio.wait_for(first_status(), 20) == status
