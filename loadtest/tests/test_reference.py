"""The Node reference speaks our public contract, and the hot scenario's per-clap accounting works
end to end against it (readers, clappers of count 1, acks with seq, every clap to every reader)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from loadtest.analysis import summarize_readers
from loadtest.articles import ArticleMix
from loadtest.clap_latency import EXACT, LOWER, UPPER
from loadtest.clappers import ClapperFleet, ClapPlan
from loadtest.httpclient import fetch_totals, request_json
from loadtest.plans import ReaderPlan, Target
from loadtest.readers import ReaderFleet
from loadtest.services import start_reference


_stash: dict[int, list[dict]] = {}


async def next_of(ws, kind: str) -> dict:
    """The next message of ``kind`` on ``ws``; others are kept for their own turn."""
    stash = _stash.setdefault(id(ws), [])
    for doc in stash:
        if doc["type"] == kind:
            stash.remove(doc)
            return doc
    while True:
        doc = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        if doc["type"] == kind:
            return doc
        stash.append(doc)


async def test_the_reference_speaks_the_public_contract(tmp_path: Path) -> None:
    server = await start_reference(tmp_path)
    try:
        session = await request_json("POST", f"{server.base_url}/api/session")
        url = server.base_url.replace("http://", "ws://") + "/ws"
        async with connect(f"{url}?token={session['token']}", compression=None) as ws, \
                connect(url, compression=None) as anonymous:
            await ws.send(orjson.dumps({"type": "join", "article": "ref-a"}).decode())
            assert await next_of(ws, "count") == {"v": 1, "type": "count", "article": "ref-a", "total": 0, "delta": 0,
                                                  "seq": 0, "epoch": 0, "at": 0}
            await ws.send(orjson.dumps({"type": "clap", "article": "ref-a", "count": 50, "id": "c1"}).decode())
            assert await next_of(ws, "ack") == {"type": "ack", "id": "c1", "seq": 1}
            await ws.send(orjson.dumps({"type": "clap", "article": "ref-a", "count": 3, "id": "c1"}).decode())
            assert await next_of(ws, "ack") == {"type": "ack", "id": "c1", "seq": 2}  # the retry is logged too
            await ws.send(orjson.dumps({"type": "clap", "article": "ref-a", "count": 1, "id": "c2"}).decode())
            assert (await next_of(ws, "ack"))["seq"] == 3  # past the cap: logged, counts nothing
            await ws.send(orjson.dumps({"type": "clap", "article": "ref-a", "count": 51, "id": "c3"}).decode())
            assert await next_of(ws, "error") == {"type": "error", "code": "bad_count",
                                                  "message": "count must be an integer 1..50", "id": "c3"}
            await anonymous.send(orjson.dumps({"type": "clap", "article": "ref-a", "count": 1, "id": "c4"}).decode())
            assert (await next_of(anonymous, "error"))["code"] == "unauthenticated"
            await anonymous.send("not json")
            assert (await next_of(anonymous, "error"))["code"] == "bad_request"
            # The windows' announcements: one, or more if a window ended between the claps above.
            counts = [await next_of(ws, "count")]
            while counts[-1]["seq"] < 3:
                counts.append(await next_of(ws, "count"))
            assert [(c["total"], c["epoch"]) for c in counts] == [(50, 1)] * len(counts)  # the retry and the cap add nothing
            assert sum(c["delta"] for c in counts) == 50 and counts[-1]["seq"] == 3
            assert [c["seq"] for c in counts] == sorted({c["seq"] for c in counts})
            assert abs(counts[-1]["at"] - time.time() * 1000) < 2000
        stored = await request_json("GET", f"{server.base_url}/api/articles/ref-a/claps")
        assert stored == {"article": "ref-a", "total": 50, "seq": 3, "epoch": 1}
        many = [f"unread-{i}" for i in range(249)] + ["ref-a"]  # three requests of at most 100
        assert await fetch_totals(server.base_url, many) == {**dict.fromkeys(many[:-1], 0), "ref-a": 50}
        published = await request_json("PUT", f"{server.base_url}/api/admin/articles/ref-b?title=B")
        assert published == {"id": "ref-b", "title": "B"}  # the load tool publishes its articles first
    finally:
        await server.stop()


async def test_every_clap_is_timed_to_every_reader_exactly_against_the_reference(tmp_path: Path) -> None:
    server = await start_reference(tmp_path)
    target = Target.from_url(server.base_url)
    mix = ArticleMix("refe2e")
    try:
        plan = ReaderPlan((target,), mix, readers=40, processes=2, source_ips=("127.0.0.2", "127.0.0.3"),
                          max_lifetime_s=120, log_frames=True)
        fleet = ReaderFleet(plan)
        fleet.start()
        try:
            connected = await fleet.wait_connected(30)
            assert connected["connected"] == 40
            clappers = ClapperFleet(ClapPlan((target,), mix, rate=40, duration_s=3.0, start_at=time.time() + 1.0,
                                             one_per_message=True))
            clappers.start()
            start = fleet.mark("start")
            ledger = await clappers.result()
            end = fleet.mark("end")
            await asyncio.sleep(0.5)  # the last window's total
            final = await request_json("GET", f"{server.base_url}/api/articles/{mix.hot}/claps")
            convergence = await fleet.convergence({(0, mix.hot): final["total"]})
            claps = ledger.claps_for_readers(0, end)
            results = await fleet.finish(claps)
        finally:
            fleet.stop()
    finally:
        await server.stop()
    acked = len(claps["by_article"][mix.hot])
    assert acked == ledger.messages > 60  # every tap its own clap, all acked with a seq
    assert all(seq > 0 for _, _, seq in claps["by_article"][mix.hot])
    assert convergence["behind"] == 0 and final["total"] == sum(ledger.acked_capped.values())
    summary = summarize_readers(results, start, end)
    per_clap = summary["per_clap_latency_ms"]
    assert set(per_clap) == {EXACT, UPPER, LOWER}
    exact = per_clap[EXACT]
    assert (exact["pairs"], exact["never"], exact["count"]) == (40 * acked, 0, 40 * acked)
    # One announcement per 100 ms window: a clap waits up to a window, then the fan-out to 40.
    assert exact["p50"] < exact["p99"] < 1000
    assert per_clap[LOWER]["p99"] <= exact["p99"] <= per_clap[UPPER]["p99"]
    assert summary["announcements_missed"]["missed"] == 0
