"""The write-cost tool runs both write paths over real loopback sockets and times each."""
from __future__ import annotations

import pytest

from loadtest.write_cost import measure


async def test_both_write_paths_are_timed_per_frame():
    costs = await measure(sockets=20, passes=3)
    assert len(costs) == 2
    for cost in costs.values():
        assert 0 < cost["us_per_frame"] < 10_000
        assert cost["user_us"] + cost["kernel_us"] == pytest.approx(cost["us_per_frame"], abs=0.02)
