"""The embedded mode: an acked clap survives kill -9, and counts after restart equal counts before."""
from __future__ import annotations

import asyncio

from tests.support.clients import Reader, http_json, new_token, wait_all


async def test_acked_claps_survive_kill_9_and_restart(embedded):
    readers = [await Reader.open(embedded.ws_url) for _ in range(5)]
    for reader in readers:
        await reader.join("hello-claps")
    clappers = [await Reader.open(embedded.ws_url, new_token(embedded.base_url)) for _ in range(10)]
    for index, clapper in enumerate(clappers):
        for batch in range(4):
            await clapper.clap("hello-claps", 5 + index % 3, f"u{index}-b{batch}")
    assert await wait_all(clappers, lambda r: len(r.acks) == 4, 20)
    expected = sum(min(4 * (5 + i % 3), 50) for i in range(10))
    assert await wait_all(readers, lambda r: r.totals.get("hello-claps") == expected, 20)
    before = http_json(f"{embedded.base_url}/api/articles/hello-claps/claps")
    assert before["total"] == expected

    # Claps acked just before the crash, possibly not yet processed, must not be lost either.
    for index, clapper in enumerate(clappers[:5]):
        await clapper.clap("why-logs-win", 3, f"late-{index}")
    assert await wait_all(clappers[:5], lambda r: len(r.acks) == 5, 20)
    embedded.kill()
    for client in readers + clappers:
        await client.close()

    embedded.start()
    after = http_json(f"{embedded.base_url}/api/articles/hello-claps/claps")
    assert (after["total"], after["seq"]) == (before["total"], before["seq"])
    reader = await Reader.open(embedded.ws_url)
    await reader.join("why-logs-win")
    assert await reader.wait_for(lambda r: r.totals.get("why-logs-win") == 15, 10)

    # Retrying an acked batch after the restart still counts it once.
    retry = await Reader.open(embedded.ws_url, new_token(embedded.base_url))
    await retry.clap("why-logs-win", 3, "fresh")
    await retry.clap("why-logs-win", 3, "fresh")
    assert await reader.wait_for(lambda r: r.totals.get("why-logs-win") == 18, 10)
    await asyncio.sleep(0.5)
    assert reader.totals["why-logs-win"] == 18
    await reader.close()
    await retry.close()


async def test_sigterm_stops_cleanly(embedded):
    assert embedded.stop() == 0
    assert "stopped cleanly" in embedded.process.log_text()
    embedded.process = None


async def test_a_restart_at_a_new_epoch_rebuilds_the_same_counts_from_the_log(embedded):
    clappers = [await Reader.open(embedded.ws_url, new_token(embedded.base_url)) for _ in range(6)]
    for index, clapper in enumerate(clappers):
        for batch in range(3):
            await clapper.clap("counting-at-scale", 9, f"u{index}-b{batch}")
    assert await wait_all(clappers, lambda r: len(r.acks) == 3, 20)
    reader = await Reader.open(embedded.ws_url)
    await reader.join("counting-at-scale")
    assert await reader.wait_for(lambda r: r.totals.get("counting-at-scale") == 6 * 27, 10)
    for client in clappers + [reader]:
        await client.close()
    assert embedded.stop() == 0

    embedded.start(CLAP_EPOCH="2")
    # Until the rebuild has caught up, the old epoch's total is served; it is never lower.
    for _ in range(100):
        after = http_json(f"{embedded.base_url}/api/articles/counting-at-scale/claps")
        assert after["total"] == 6 * 27
        if after["epoch"] == 2:
            break
        await asyncio.sleep(0.1)
    assert after["epoch"] == 2
