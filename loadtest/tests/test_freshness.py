"""The load tool's reading of the services' count-age histograms: Prometheus's quantile rule, and
the buckets as the gateway's own registry writes them."""
from __future__ import annotations

import math

from prometheus_client import generate_latest

from gateway.server import Metrics
from loadtest.freshness import GATEWAY_AGE, buckets_of, difference, quantile


def test_quantiles_interpolate_within_the_bucket_as_prometheus_does():
    buckets = {0.1: 50.0, 0.2: 100.0, math.inf: 100.0}
    assert quantile(buckets, 0.5) == 0.1
    assert math.isclose(quantile(buckets, 0.99), 0.198)
    assert quantile({0.1: 0.0, math.inf: 0.0}, 0.5) is None
    assert quantile({0.1: 0.0, 0.2: 0.0, math.inf: 4.0}, 0.99) == 0.2  # past the last bound: that bound


def test_a_run_is_the_difference_of_two_scrapes_of_the_gateways_histogram():
    metrics = Metrics()
    metrics.count_age.observe(0.07)
    before = buckets_of(generate_latest(metrics.registry).decode(), GATEWAY_AGE)
    for seconds in (0.12, 0.14, 0.9, 3.0):
        metrics.count_age.observe(seconds)
    run = difference(buckets_of(generate_latest(metrics.registry).decode(), GATEWAY_AGE), before)
    assert run[math.inf] == 4 and run[0.1] == 0 and run[0.15] == 2 and run[1.0] == 3
    assert quantile(run, 0.5) == 0.15  # the second of four: the top of the (0.1, 0.15] bucket
