"""Undo through Kafka, Faust and Cassandra: the scenario of tests/e2e/test_undo.py, distributed."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.e2e.test_undo import undo_scenario
from tests.support.clients import http_json
from tests.support.pipeline import cassandra_total, register_articles

pytestmark = pytest.mark.services


async def test_undo_takes_a_readers_claps_back_live_and_retries_count_once_distributed(pipeline):
    article = f"undo-{uuid.uuid4().hex[:6]}"
    await register_articles(pipeline, article)
    await undo_scenario(pipeline.base_url, pipeline.ws_url, article, timeout_s=30)
    for _ in range(100):  # the projector writes the durable total shortly after
        if (cassandra_total(pipeline.keyspace, article) or (0,))[0] == 53:
            break
        await asyncio.sleep(0.2)
    assert cassandra_total(pipeline.keyspace, article)[0] == 53
    assert (await asyncio.to_thread(http_json, f"{pipeline.base_url}/api/articles/{article}/claps"))["total"] == 53
