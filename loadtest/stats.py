"""Latency histograms and per-second counters that are cheap to fill and to merge across processes.

A reader process sees up to ~10^5 frames per second, so samples are not stored: each latency
falls into a log-scaled bucket (16 per doubling, so any percentile is within ±2.2% of the true
value) of a histogram kept per wall-clock second. Keeping one histogram per second lets the
orchestrator pick the seconds of a phase afterwards (e.g. only while clappers ran) without
telling the readers when phases start.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

SUB_BUCKETS = 16  # per doubling of the latency
MAX_BUCKET = 27 * SUB_BUCKETS  # 2^27 µs ≈ 134 s; anything slower lands in the last bucket
_LOG2 = math.log2


def bucket_of(latency_us: float) -> int:
    if latency_us <= 1.0:
        return 0
    index = int(_LOG2(latency_us) * SUB_BUCKETS)
    return index if index < MAX_BUCKET else MAX_BUCKET


def bucket_value_us(index: int) -> float:
    """The geometric middle of a bucket."""
    return 2.0 ** ((index + 0.5) / SUB_BUCKETS)


Histogram = dict[int, int]  # bucket -> count; sparse, since latencies cluster


def merge_histograms(histograms: Iterable[Mapping[int, int]]) -> Histogram:
    merged: Histogram = {}
    for histogram in histograms:
        for bucket, count in histogram.items():
            merged[bucket] = merged.get(bucket, 0) + count
    return merged


def percentiles_ms(histogram: Mapping[int, int], points: Sequence[float] = (50, 95, 99, 99.9)) -> dict[str, float | None]:
    """``{"p50": ms, ...}`` from a bucket histogram; None when it is empty."""
    total = sum(histogram.values())
    result: dict[str, float | None] = {f"p{p:g}": None for p in points}
    if total == 0:
        return result
    ordered = sorted(histogram.items())
    for p in points:
        rank = max(1, math.ceil(total * p / 100))
        seen = 0
        for bucket, count in ordered:
            seen += count
            if seen >= rank:
                result[f"p{p:g}"] = round(bucket_value_us(bucket) / 1000, 3)
                break
    result["max"] = round(bucket_value_us(ordered[-1][0]) / 1000, 3)
    result["count"] = total
    return result


def quantiles(values: Sequence[float], points: Sequence[float] = (0, 1, 5, 50, 95, 99, 100)) -> dict[str, float | None]:
    """Exact nearest-rank quantiles of a small list (per-reader rates, per-second throughputs)."""
    if not values:
        return {f"p{p:g}": None for p in points}
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for p in points:
        index = min(len(ordered) - 1, max(0, math.ceil(len(ordered) * p / 100) - 1))
        out[f"p{p:g}"] = round(ordered[index], 3)
    return out


def add_series(into: dict[int, int], series: Mapping[int, int]) -> None:
    for second, count in series.items():
        into[second] = into.get(second, 0) + count


def seconds_within(series: Mapping[int, int], start: float, end: float) -> list[int]:
    """Values of the whole seconds that lie entirely inside ``[start, end]`` (partial ones skew rates)."""
    return [series.get(s, 0) for s in range(math.ceil(start), math.floor(end))]
