"""How far behind the claps the counts are: one histogram shape for every service that measures it.

A total carries ``at``, when its newest clap reached a gateway (``core.messages.CountChanged``);
a service that handles the total observes its age then. The gateway's histogram says how fresh
the counts its readers are sent are (before fan-out), the projector's how fresh the durable
counts are. The ages compare two hosts' wall clocks, so NTP's error (milliseconds) is in them.
"""
from __future__ import annotations

# From one window (0.1 s) to a pipeline that lags by minutes.
COUNT_AGE_BUCKETS_S = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30, 60)


def age_s(at_ms: int, now_ms: int) -> float:
    """Seconds from ``at_ms`` to ``now_ms``; a clock behind the gateway's reads as 0, not negative."""
    return max(0, now_ms - at_ms) / 1000
