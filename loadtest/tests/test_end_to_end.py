"""Readers against the bare baseline server: frames arrive, nothing is lost, totals converge."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from loadtest.analysis import summarize_readers
from loadtest.articles import ArticleMix
from loadtest.httpclient import request_json
from loadtest.plans import ReaderPlan, Target
from loadtest.readers import ReaderFleet
from loadtest.services import start_baseline


async def test_readers_receive_every_broadcast(tmp_path: Path) -> None:
    server = await start_baseline(tmp_path)
    try:
        port = int(server.base_url.rsplit(":", 1)[1])
        plan = ReaderPlan((Target("127.0.0.1", port, "/"),), ArticleMix("e2e"), readers=60, processes=2,
                          source_ips=("127.0.0.2", "127.0.0.3"), max_lifetime_s=60)
        fleet = ReaderFleet(plan)
        fleet.start()
        try:
            connected = await fleet.wait_connected(30)
            assert connected["connected"] == 60 and connected["snapshots"] == 60
            await request_json("POST", f"{server.base_url}/broadcast?seconds=1&interval_ms=20")
            start = fleet.mark("start")
            await asyncio.sleep(1.5)
            end = fleet.mark("end")
            stats = await request_json("GET", f"{server.base_url}/stats")
            convergence = await fleet.convergence({(0, "e2e-0"): stats["broadcasts"]})
            results = await fleet.finish()
        finally:
            fleet.stop()
    finally:
        await server.stop()
    summary = summarize_readers(results, start, end)
    assert convergence["behind"] == 0 and convergence["checked"] == 60
    assert summary["skipped"] == summary["duplicates"] == summary["out_of_order"] == summary["misrouted"] == 0
    assert sum(c for _, c in summary["series"]["updates"]) == 60 * stats["broadcasts"]
    assert summary["latency_ms"]["count"] == 60 * stats["broadcasts"]
    assert summary["latency_ms"]["p50"] < 1000
    assert start < end <= time.time()
