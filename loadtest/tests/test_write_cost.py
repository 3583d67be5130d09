"""The write-cost tool runs both write paths over real loopback sockets and times each."""
from __future__ import annotations

from loadtest.write_cost import measure


async def test_both_write_paths_are_timed_per_frame():
    costs = await measure(sockets=20, passes=3)
    assert len(costs) == 2 and all(0 < cost < 10_000 for cost in costs.values())
