"""How far behind the claps the counts were during a run, by stage, from the services' own
histograms (observability/freshness.py): a clap reaching a gateway -> its total at a gateway
(``gateway_count_age_seconds``: the log, the processor and the fan-out topic), and -> its total in
Cassandra (``projector_count_age_seconds``); and the first step of both, a clap handed to the
clap log -> durable there (``gateway_clap_append_seconds``). Read before and after the run; the
difference is the run's. Beside the per-clap latency to readers it says which stage holds the
time: the gateway's age is everything before the fan-out pass, the append included.
"""
from __future__ import annotations

import math
import os
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from loadtest.httpclient import HttpError, request_body

GATEWAY_AGE = "gateway_count_age_seconds"
GATEWAY_APPEND = "gateway_clap_append_seconds"  # a clap handed to the log -> durable there
DURABLE_AGE = "projector_count_age_seconds"
PROJECTOR_METRICS_URL = f"http://127.0.0.1:{os.environ.get('PROJECTOR_METRICS_PORT', '9102')}/metrics"

Buckets = dict[float, float]  # upper bound (le) -> cumulative count


def buckets_of(metrics_text: str, family_name: str) -> Buckets:
    """One histogram's cumulative buckets from a /metrics page (summed over its label sets)."""
    found: Buckets = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != family_name:
            continue
        for sample in family.samples:
            if sample.name == f"{family_name}_bucket":
                le = float(sample.labels["le"])
                found[le] = found.get(le, 0.0) + sample.value
    return found


def difference(after: Buckets, before: Buckets) -> Buckets:
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def quantile(buckets: Buckets, q: float) -> float | None:
    """Prometheus's histogram_quantile: linear within the bucket the rank falls in; None if empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # past the last finite bound: its bound is all that is known
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = le, count
    return lower


async def read_buckets(urls: list[str], family_name: str) -> Buckets:
    """The histogram summed over the services at ``urls``; those that do not answer add nothing."""
    total: Buckets = {}
    for url in urls:
        try:
            text = (await request_body("GET", url, timeout_s=5)).decode()
        except (OSError, HttpError, TimeoutError, ValueError):
            continue
        for le, count in buckets_of(text, family_name).items():
            total[le] = total.get(le, 0.0) + count
    return total


class FreshnessProbe:
    """Snapshots of the three histograms; ``result`` is what happened between the two."""

    def __init__(self, gateway_metrics_urls: list[str], projector_metrics_url: str | None) -> None:
        self.gateways = gateway_metrics_urls
        self.projector = [projector_metrics_url] if projector_metrics_url else []
        self.before: dict[str, Buckets] = {}

    async def start(self) -> None:
        self.before = {GATEWAY_AGE: await read_buckets(self.gateways, GATEWAY_AGE),
                       GATEWAY_APPEND: await read_buckets(self.gateways, GATEWAY_APPEND),
                       DURABLE_AGE: await read_buckets(self.projector, DURABLE_AGE)}

    async def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, urls in ((GATEWAY_AGE, self.gateways), (GATEWAY_APPEND, self.gateways), (DURABLE_AGE, self.projector)):
            run = difference(await read_buckets(urls, name), self.before.get(name, {}))
            count = max(run.values(), default=0.0)
            if count <= 0:
                continue
            out[name] = {"totals": int(count), **{f"p{round(q * 100)}_ms": _ms(quantile(run, q)) for q in (0.5, 0.99)}}
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
