"""'N reading now' over Kafka's presence topic: readers of two gateway processes are summed."""
from __future__ import annotations

import uuid

import pytest

from tests.support.clients import Reader
from tests.support.pipeline import register_articles
from tests.support.processes import ServiceProcess, free_port

pytestmark = pytest.mark.services


async def test_readers_of_two_gateway_processes_are_summed_and_a_killed_one_expires(pipeline, log_dir):
    article = f"presence-{uuid.uuid4().hex[:6]}"
    port = free_port()
    second = ServiceProcess(
        "presence-gateway-2", ["-m", "gateway"], {**pipeline.env, "PORT": str(port), "GATEWAY_NAME": "gateway-2"}, log_dir
    )
    try:
        second.wait_for_http(f"http://127.0.0.1:{port}/healthz", 60)
        await register_articles(pipeline, article, gateways=[pipeline.base_url, f"http://127.0.0.1:{port}"])
        on_first = [await Reader.open(pipeline.ws_url) for _ in range(2)]
        on_second = [await Reader.open(f"ws://127.0.0.1:{port}/ws") for _ in range(3)]
        for reader in on_first + on_second:
            await reader.join(article)
        assert all([await r.wait_for(lambda r: r.reading.get(article) == 5, 6) for r in on_first + on_second])
        await on_second[0].close()
        assert all([await r.wait_for(lambda r: r.reading.get(article) == 4, 4) for r in on_first])
        # A gateway killed without a word: its readers stop counting once its reports expire (5 s).
        second.kill()
        assert all([await r.wait_for(lambda r: r.reading.get(article) == 2, 10) for r in on_first])
        for reader in on_first:
            await reader.close()
    finally:
        second.stop()
