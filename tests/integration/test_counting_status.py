"""Readers are told when their count is catching up, against the real pipeline.

The only processor worker is killed with SIGKILL while claps keep being acked: the reader of an
article is told "catching_up" once the gateway has heard nothing for STALE_S (plus a look and
a fetch), the gateway's /readyz says which partition and since when (and stays 200), and once a
new worker has read the log the reader is told "live" and holds the exact total of every acked
clap.
"""
from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid

import pytest

from core.routing import shard_of
from tests.support.clients import Reader, http_json, new_token
from tests.support.pipeline import register_articles, running_pipeline, start_processor

pytestmark = pytest.mark.services

STALE_S = 5  # the gateway's default (COUNTING_STALE_S)


async def acked(clappers: list[Reader], ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for clapper, clap_id in zip(clappers, ids):
        assert await clapper.wait_for(lambda r: clap_id in r.acks, max(0.0, deadline - time.monotonic())), (
            f"clap {clap_id} not acked: {clapper.errors}")


async def test_a_reader_is_told_catching_up_while_the_only_worker_is_dead_and_live_with_the_exact_total_after(
    real_services, run_id, log_dir
):
    with running_pipeline(run_id, "counting", log_dir) as (pipeline, extra):
        article = f"counting-{uuid.uuid4().hex[:6]}"
        await register_articles(pipeline, article)
        reader = (await Reader.open_joined(pipeline.ws_url, article, 1))[0]
        clappers = [await Reader.open(pipeline.ws_url, await asyncio.to_thread(new_token, pipeline.base_url)) for _ in range(3)]

        for index, clapper in enumerate(clappers):
            await clapper.clap(article, 2, f"before-{index}")
        await acked(clappers, [f"before-{i}" for i in range(3)], 20)
        assert await reader.wait_for(lambda r: r.totals.get(article) == 6, 30)
        # Past the grace a new room gets: the worker's statuses reach the partition this gateway
        # reads for the article, so it stays live and nobody is told anything.
        await asyncio.sleep(STALE_S + 1)
        assert reader.counting_messages == []
        readyz = await asyncio.to_thread(http_json, f"{pipeline.base_url}/readyz")
        assert readyz["counting"] == {"state": "live"}

        pipeline.processor.kill()
        killed = time.monotonic()
        for index, clapper in enumerate(clappers):  # acked while nobody counts: they wait in the log
            await clapper.clap(article, 3, f"during-{index}")
        await acked(clappers, [f"during-{i}" for i in range(3)], 20)

        left = STALE_S + 2 - (time.monotonic() - killed)
        assert await reader.wait_for(lambda r: r.counting.get(article) == "catching_up", left), (
            f"no catching_up within {STALE_S + 2} s of the kill: {reader.counting_messages}")
        told_after_s = reader.counting_messages[0][0] - killed
        assert told_after_s <= STALE_S + 2
        assert reader.totals[article] == 6  # the count stood still, and the reader knows why
        readyz = await asyncio.to_thread(http_json, f"{pipeline.base_url}/readyz")  # 200: it raises otherwise
        assert readyz["status"] == "ok"
        counting = readyz["counting"]
        assert (counting["state"], counting["articles"]) == ("catching_up", 1)
        assert [(p["partition"], p["articles"], p["reason"]) for p in counting["partitions"]] == [
            (shard_of(article, int(pipeline.env["CLAP_PARTITIONS"])), 1, "no word from the processor")]

        # The same worker identity (its web port names it), as a restarted pod: it takes its
        # partitions back at once (static membership) and reads what was acked meanwhile.
        port = urllib.parse.urlsplit(pipeline.processor_metrics_url).port
        pipeline.processor = start_processor(pipeline, "counting-processor-2", log_dir, PROCESSOR_WEB_PORT=str(port))
        assert await reader.wait_for(lambda r: r.counting.get(article) == "live" and r.totals.get(article) == 15, 120), (
            f"reader holds {reader.totals.get(article)} and was told {reader.counting_messages}")
        assert [state for _, _, state in reader.counting_messages] == ["catching_up", "live"]
        assert reader.out_of_order == 0 and reader.drops == 0 and reader.errors == []
        readyz = await asyncio.to_thread(http_json, f"{pipeline.base_url}/readyz")
        assert readyz["counting"] == {"state": "live"}
        print(f"catching_up told {told_after_s:.1f} s after the kill")
        for client in (reader, *clappers):
            await client.close()
