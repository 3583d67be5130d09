"""Token buckets: per connection (claps, joins), and per client address (new identities)."""
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


class KeyedRateLimiter:
    """One :class:`TokenBucket` per key (a client address), for at most ``max_keys`` keys.

    Memory is bounded: past ``max_keys`` the least recently used key is forgotten. A bucket
    that has been idle for ``burst / rate`` seconds is full again, exactly as if it had been
    forgotten, so eviction only gives a key a fresh allowance early when ``max_keys`` other
    keys were used within that time; the table's size is chosen so that takes more addresses
    than an abuser has.
    """

    def __init__(self, rate: float, burst: int, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}  # in order of last use, oldest first

    def take(self, key: str, now_ms: int) -> bool:
        """Spend one of ``key``'s tokens if it has one."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now_ms)
            if len(self._buckets) >= self.max_keys:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = bucket  # re-inserted: now the most recently used
        return bucket.take(now_ms)

    def __len__(self) -> int:
        return len(self._buckets)
