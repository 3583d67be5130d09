"""How far behind the claps a gateway's counts are (gateway_count_age_seconds), in the embedded
service composed in-process: real claps through the processing loop, and a total whose newest clap
is known to be two seconds old."""
from __future__ import annotations

import asyncio
import time

from core.messages import CountChanged
from tests.support.clients import Reader, new_token
from tests.support.inprocess import InProcessService


def age_samples(service: InProcessService) -> dict[str, float]:
    registry = service.gateways[0].metrics.registry
    return {name: registry.get_sample_value(name) or 0.0 for name in (
        "gateway_count_age_seconds_count", "gateway_count_age_seconds_sum", "gateway_updates_received_total")}


async def test_every_total_received_is_timed_from_its_newest_clap(tmp_path):
    service = await InProcessService(tmp_path).start()
    try:
        token = await asyncio.to_thread(new_token, service.url())
        reader = await Reader.open(service.ws_url(), token)
        await reader.join("hello-claps")
        assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 0, 10)
        sent = time.monotonic()
        for n in range(3):
            await reader.clap("hello-claps", 2, f"fresh-{n}")
        assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 6, 10)
        waited = time.monotonic() - sent
        live = age_samples(service)
        # Every total the feed brought reached this room's one reader (its first count was the join's
        # answer), and each was timed once: one to three windows for three claps.
        received = live["gateway_updates_received_total"]
        assert received == reader.counts_received - 1 and 1 <= received <= 3
        assert live["gateway_count_age_seconds_count"] == received
        # None older than the wait for the last one.
        assert 0 <= live["gateway_count_age_seconds_sum"] <= waited * live["gateway_count_age_seconds_count"]

        # A total whose newest clap reached a gateway 2 s ago (a processor that lagged) reads 2 s old.
        two_s_ago = time.time_ns() // 1_000_000 - 2000
        await service.feed.publish([CountChanged("hello-claps", 9, 3, 10_000, 1, two_s_ago)])
        assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 9, 10)
        late = age_samples(service)
        assert late["gateway_count_age_seconds_count"] == live["gateway_count_age_seconds_count"] + 1
        assert 1.999 <= late["gateway_count_age_seconds_sum"] - live["gateway_count_age_seconds_sum"] < 2.0 + 5  # float sums
        registry = service.gateways[0].metrics.registry
        assert registry.get_sample_value("gateway_count_age_seconds_bucket", {"le": "1.5"}) == \
            live["gateway_count_age_seconds_count"]  # the late one alone is past 1.5 s
        await reader.close()
    finally:
        await service.stop()
