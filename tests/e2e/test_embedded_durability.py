"""The embedded mode: an acked clap survives kill -9, and counts after restart equal counts before."""
from __future__ import annotations

import asyncio

from core.messages import ClapRecorded
from tests.support.clients import Reader, http_json, new_token, wait_all


async def test_acked_claps_survive_kill_9_and_restart(embedded):
    readers = [await Reader.open(embedded.ws_url) for _ in range(5)]
    for reader in readers:
        await reader.join("hello-claps")
    tokens = [new_token(embedded.base_url) for _ in range(10)]
    clappers = [await Reader.open(embedded.ws_url, token) for token in tokens]
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

    # Retrying a batch acked before the kill -9, by the same user, adds nothing: a client that
    # lost that ack resends it. A fresh batch after it shows the retry was processed.
    retry = await Reader.open(embedded.ws_url, tokens[0])
    await retry.clap("why-logs-win", 3, "late-0")
    assert await retry.wait_for(lambda r: "late-0" in r.acks, 10)
    await retry.clap("why-logs-win", 3, "fresh")
    assert await retry.wait_for(lambda r: "fresh" in r.acks, 10)
    assert await reader.wait_for(lambda r: r.totals.get("why-logs-win") == 18, 10)
    await asyncio.sleep(0.5)
    assert reader.totals["why-logs-win"] == 18
    assert retry.errors == []
    assert http_json(f"{embedded.base_url}/api/articles/why-logs-win/claps")["total"] == 18
    await reader.close()
    await retry.close()


async def test_a_torn_line_mid_log_and_a_torn_tail_are_set_aside_and_counting_goes_on(embedded):
    assert embedded.stop() == 0
    lines = [ClapRecorded("hello-claps", f"u{i}", 5, f"b{i}", 1_000 + i).to_json() + b"\n" for i in range(6)]
    # u2's write was torn after 20 bytes and u3's line landed right after it; u5's line was torn
    # by the crash at the very end.
    log_path = embedded.data_dir / "claps.log"
    kept = lines[0] + lines[1] + lines[2][:20] + lines[3] + lines[4]
    log_path.write_bytes(kept + lines[5][:25])
    embedded.start()
    reader = await Reader.open(embedded.ws_url)
    await reader.join("hello-claps")
    assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 15, 10)  # u0, u1, u4

    clapper = await Reader.open(embedded.ws_url, new_token(embedded.base_url))
    await clapper.clap("hello-claps", 4, "after-the-tear")
    assert await clapper.wait_for(lambda r: "after-the-tear" in r.acks, 10)
    assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 19, 10)
    await asyncio.sleep(0.5)
    assert reader.totals["hello-claps"] == 19
    assert embedded.process.process.poll() is None
    service_log = embedded.process.log_text()
    assert f"line at offset 2 (byte {len(lines[0] + lines[1])}" in service_log
    assert (embedded.data_dir / f"claps.log.torn-at-{len(kept)}").read_bytes() == lines[5][:25]
    # The new clap starts on its own line, after the tail that was set aside.
    assert log_path.read_bytes()[: len(kept)] == kept
    assert ClapRecorded.from_json(log_path.read_bytes()[len(kept):]).clap_id == "after-the-tear"
    await reader.close()
    await clapper.close()


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
