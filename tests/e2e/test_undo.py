"""Undo through the public contract (docs/PROTOCOL.md, "undo"), against the embedded service.

The same scenario runs against Kafka, Faust and Cassandra in tests/integration/test_undo_pipeline.py.
"""
from __future__ import annotations

import asyncio
import time

from tests.support.clients import Reader, http_json, new_token


async def wait_mine(reader: Reader, article: str, expected: int, timeout_s: float) -> None:
    """Join again until the join answer's ``mine`` is ``expected`` (a store may lag the total)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reader.mine.pop(article, None)
        await reader.join(article)
        if await reader.wait_for(lambda r: article in r.mine, 2) and reader.mine[article] == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"mine on {article} is {reader.mine.get(article)}, expected {expected}")


async def undo_scenario(base_url: str, ws_url: str, article: str, timeout_s: float = 15) -> None:
    """Two clappers and a watcher: an undo lowers the total live, retries count nothing again."""
    watcher = await Reader.open(ws_url)
    await watcher.join(article)
    me = await Reader.open(ws_url, await asyncio.to_thread(new_token, base_url))
    other = await Reader.open(ws_url, await asyncio.to_thread(new_token, base_url))
    await me.join(article)
    await me.clap(article, 5, "mine-1")
    await other.clap(article, 3, "other-1")
    assert await watcher.wait_for(lambda r: r.totals.get(article) == 8, timeout_s)
    before = watcher.positions[article]

    await me.undo(article, "undo-1")
    assert await me.wait_for(lambda r: "undo-1" in r.acks, timeout_s)
    # Every reader sees the total go down, live, at a position at or above the undo's ack.
    assert await watcher.wait_for(lambda r: r.totals.get(article) == 3, timeout_s)
    assert watcher.positions[article] > before
    assert watcher.positions[article][1] >= me.ack_seqs["undo-1"]
    assert watcher.drops == 1 and watcher.out_of_order == 0
    await wait_mine(me, article, 0, timeout_s)

    # A batch retried after the undo (its ack lost, say) is acked again and counts nothing.
    me.acks.discard("mine-1")
    await me.clap(article, 5, "mine-1")
    assert await me.wait_for(lambda r: "mine-1" in r.acks, timeout_s)
    # New claps count; the undo retried after them takes nothing.
    await me.clap(article, 2, "mine-2")
    assert await me.wait_for(lambda r: "mine-2" in r.acks, timeout_s)
    me.acks.discard("undo-1")
    await me.undo(article, "undo-1")
    assert await me.wait_for(lambda r: "undo-1" in r.acks, timeout_s)
    assert await watcher.wait_for(lambda r: r.positions[article][1] >= me.ack_seqs["undo-1"], timeout_s)
    assert watcher.totals[article] == 5
    # The cap starts again from zero: 2 counted, so 48 of these 50 count.
    await me.clap(article, 50, "mine-3")
    assert await watcher.wait_for(lambda r: r.totals.get(article) == 53, timeout_s)
    await wait_mine(me, article, 50, timeout_s)
    assert watcher.drops == 1 and watcher.out_of_order == 0
    assert me.errors == [] and other.errors == []
    for client in (watcher, me, other):
        await client.close()


async def test_undo_takes_a_readers_claps_back_live_and_retries_count_once(embedded):
    await undo_scenario(embedded.base_url, embedded.ws_url, "hello-claps")
    assert (await asyncio.to_thread(http_json, f"{embedded.base_url}/api/articles/hello-claps/claps"))["total"] == 53


async def test_undone_claps_stay_undone_after_a_crash_and_restart(embedded):
    me = await Reader.open(embedded.ws_url, await asyncio.to_thread(new_token, embedded.base_url))
    await me.join("why-logs-win")
    await me.clap("why-logs-win", 9, "before")
    await me.undo("why-logs-win", "take-back")
    assert await me.wait_for(lambda r: {"before", "take-back"} <= r.acks, 10)
    assert await me.wait_for(lambda r: r.totals.get("why-logs-win") == 0 and r.positions["why-logs-win"][1] >= r.ack_seqs["take-back"], 10)
    await me.close()
    embedded.kill()  # no clean shutdown: the processor replays from its last commit
    embedded.start()
    rest = await asyncio.to_thread(http_json, f"{embedded.base_url}/api/articles/why-logs-win/claps")
    assert (rest["total"], rest["seq"]) == (0, me.ack_seqs["take-back"])


async def test_undo_needs_an_identity_a_known_article_and_a_good_id(embedded):
    anonymous = await Reader.open(embedded.ws_url)
    await anonymous.undo("hello-claps", "u1")
    client = await Reader.open(embedded.ws_url, await asyncio.to_thread(new_token, embedded.base_url))
    await client.undo("never-published", "u2")
    await client.ws.send('{"type":"undo","article":"hello-claps","id":"bad id"}')
    await client.ws.send('{"type":"undo","article":"hello-claps"}')
    assert await anonymous.wait_for(lambda r: len(r.errors) == 1, 10)
    assert await client.wait_for(lambda r: len(r.errors) == 3, 10)
    assert [(e["code"], e.get("id")) for e in anonymous.errors] == [("unauthenticated", "u1")]
    assert [(e["code"], e.get("id")) for e in client.errors] == [
        ("not_found", "u2"), ("bad_request", None), ("bad_request", None)
    ]
    assert client.acks == set()
    await anonymous.close()
    await client.close()
