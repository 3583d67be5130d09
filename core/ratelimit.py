"""A token bucket per connection, so one client cannot flood the clap log."""
from __future__ import annotations


class TokenBucket:
    """Allows ``rate`` events per second on average, bursts up to ``burst``."""

    __slots__ = ("rate", "burst", "_tokens", "_last_ms")

    def __init__(self, rate: float, burst: int, now_ms: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last_ms = now_ms

    def take(self, now_ms: int) -> bool:
        """Spend one token if there is one; refill by elapsed time first."""
        elapsed = max(0, now_ms - self._last_ms)
        self._last_ms = now_ms
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate / 1000)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
