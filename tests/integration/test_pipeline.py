"""End to end through real Kafka, Faust and Cassandra: websocket readers see exact totals."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.support.pipeline import cassandra_total, register_articles
from tests.support.clients import Reader, http_json, new_token, wait_all

pytestmark = pytest.mark.services


async def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.2)
    return False


async def test_every_reader_of_an_article_converges_and_no_other_room_hears_it(pipeline):
    hot, other = f"hot-{uuid.uuid4().hex[:6]}", f"quiet-{uuid.uuid4().hex[:6]}"
    await register_articles(pipeline, hot, other)
    readers = [await Reader.open(pipeline.ws_url) for _ in range(150)]
    bystanders = [await Reader.open(pipeline.ws_url) for _ in range(5)]
    for reader in readers:
        await reader.join(hot)
    for reader in bystanders:
        await reader.join(other)
    assert await wait_all(readers + bystanders, lambda r: r.counts_received == 1, 20)  # the join's answer

    clappers = [await Reader.open(pipeline.ws_url, new_token(pipeline.base_url)) for _ in range(6)]
    expected = 0
    for index, clapper in enumerate(clappers):
        # Each user claps in several batches; the last user tries to exceed the cap of 50.
        batches = [7, 9, 3] if index < 5 else [30, 30]
        for batch_no, count in enumerate(batches):
            await clapper.clap(hot, count, f"c{index}-{batch_no}")
        expected += min(sum(batches), 50)
    # A retried batch (same id) must not count again.
    await clappers[0].clap(hot, 7, "c0-0")
    assert await wait_all(clappers, lambda r: len(r.acks) >= 3 if r is not clappers[-1] else len(r.acks) >= 2, 20)

    assert await wait_all(readers, lambda r: r.totals.get(hot) == expected, 30), (
        f"expected {expected}, readers hold {sorted({r.totals.get(hot) for r in readers}, key=str)}"
    )
    await asyncio.sleep(0.5)  # anything misrouted would have arrived by now
    assert all(r.counts_received == 1 and r.totals == {other: 0} for r in bystanders)
    assert all(r.out_of_order == 0 for r in readers)

    assert await wait_until(lambda: (cassandra_total(pipeline.keyspace, hot) or (0,))[0] == expected, 20)
    rest = http_json(f"{pipeline.base_url}/api/articles/{hot}/claps")
    assert rest["total"] == expected
    assert (rest["total"], rest["seq"]) == cassandra_total(pipeline.keyspace, hot)

    for client in readers + bystanders + clappers:
        await client.close()


async def test_a_page_loaded_later_shows_the_durable_total(pipeline):
    article = f"late-{uuid.uuid4().hex[:6]}"
    await register_articles(pipeline, article)
    clapper = await Reader.open(pipeline.ws_url, new_token(pipeline.base_url))
    await clapper.clap(article, 12, "only")
    assert await clapper.wait_for(lambda r: "only" in r.acks, 20)
    assert await wait_until(lambda: (cassandra_total(pipeline.keyspace, article) or (0,))[0] == 12, 20)
    late = await Reader.open(pipeline.ws_url)
    await late.join(article)
    assert await late.wait_for(lambda r: r.totals.get(article) == 12, 10)
    await late.close()
    await clapper.close()


async def test_clapping_needs_a_verified_identity(pipeline):
    anonymous = await Reader.open(pipeline.ws_url)
    await anonymous.clap("any", 1, "x")
    forged = await Reader.open(pipeline.ws_url, "mallory.AAAA")
    await forged.clap("any", 1, "y")
    for client in (anonymous, forged):
        assert await client.wait_for(lambda r: r.errors, 10)
        assert client.errors[0]["code"] == "unauthenticated"
        assert not client.acks
        await client.close()


def cassandra_user_totals(keyspace: str, article: str) -> dict[str, int]:
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=9042)
    try:
        rows = cluster.connect().execute(f"SELECT user, total FROM {keyspace}.user_totals WHERE article = %s", (article,))
        return {row.user: row.total for row in rows}
    finally:
        cluster.shutdown()


async def test_each_readers_counted_claps_are_stored_for_their_mine(pipeline):
    article = f"mine-{uuid.uuid4().hex[:6]}"
    await register_articles(pipeline, article)
    tokens = [new_token(pipeline.base_url) for _ in range(3)]
    clappers = [await Reader.open(pipeline.ws_url, token) for token in tokens]
    plans = [[7], [30, 30], [5, 5]]  # the second user passes the cap; the third retries an id below
    for index, (clapper, plan) in enumerate(zip(clappers, plans)):
        for batch_no, count in enumerate(plan):
            await clapper.clap(article, count, f"m{index}-{batch_no}")
    await clappers[2].clap(article, 5, "m2-0")
    acked = [{"m0-0"}, {"m1-0", "m1-1"}, {"m2-0", "m2-1"}]  # the retry is acked under its own id
    assert await wait_all(clappers, lambda r: r.acks == acked[clappers.index(r)], 20)
    assert all(not c.errors for c in clappers)
    expected = {tokens[0].split(".")[0]: 7, tokens[1].split(".")[0]: 50, tokens[2].split(".")[0]: 10}
    assert await wait_until(lambda: cassandra_user_totals(pipeline.keyspace, article) == expected, 30), (
        cassandra_user_totals(pipeline.keyspace, article)
    )
    for client in clappers:
        await client.close()
