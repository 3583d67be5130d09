"""Acks with positions and "mine" through Kafka, Faust, the projector and Cassandra."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.support.clients import Reader, new_token
from tests.support.pipeline import register_articles

pytestmark = pytest.mark.services


async def test_acks_point_at_the_total_that_counts_them_and_joins_answer_mine(pipeline):
    article = f"reader-path-{uuid.uuid4().hex[:8]}"
    await register_articles(pipeline, article)
    token = await asyncio.to_thread(new_token, pipeline.base_url)
    reader = await Reader.open(pipeline.ws_url)
    await reader.join(article)
    clapper = await Reader.open(pipeline.ws_url, token)
    await clapper.clap(article, 4, "a")
    assert await clapper.wait_for(lambda r: "a" in r.ack_seqs, 20)
    first_a = clapper.ack_seqs["a"]
    await clapper.clap(article, 6, "b")
    assert await clapper.wait_for(lambda r: "b" in r.ack_seqs, 20)
    await clapper.clap(article, 4, "a")  # a retry: acked again, at its own position, counted once
    assert await clapper.wait_for(lambda r: r.ack_seqs["a"] != first_a, 20)
    assert first_a < clapper.ack_seqs["b"] < clapper.ack_seqs["a"]
    # The newest event of the article is the retry; the total at its position counts it nothing.
    assert await reader.wait_for(lambda r: r.positions.get(article, (0, 0))[1] == clapper.ack_seqs["a"], 30)
    assert reader.totals[article] == 10

    # "mine" comes from user_totals, which the projector fills from the per-user changelog.
    mine = None
    for _ in range(60):
        again = await Reader.open(pipeline.ws_url, token)
        await again.join(article)
        await again.wait_for(lambda r: article in r.mine, 10)
        mine = again.mine.get(article)
        await again.close()
        if mine == 10:
            break
        await asyncio.sleep(0.5)
    assert mine == 10
    stranger = await Reader.open(pipeline.ws_url, await asyncio.to_thread(new_token, pipeline.base_url))
    await stranger.join(article)
    assert await stranger.wait_for(lambda r: r.mine.get(article) == 0, 10)
    for client in (reader, clapper, stranger):
        await client.close()
