"""The projector's Prometheus metrics, on their own HTTP server (PROJECTOR_METRICS_PORT).

- ``projector_records_total{kind}``: records consumed: ``total`` (the fan-out topic's numbered
  totals) and ``user`` (the processor's per-user changelog).
- ``projector_rows_written_total{kind}``: rows Cassandra acknowledged, after keeping the newest
  per article (per reader) of each batch.
- ``projector_write_seconds{kind}``: Cassandra write latency of one batch's rows, retries included.
- ``projector_count_age_seconds``: from the newest clap in a total reaching a gateway to the total
  being written to Cassandra: how far the durable counts are behind the claps.
- ``projector_write_retries_total``: writes that failed transiently and were tried again.
- ``projector_commits_lost_total``: batches whose offsets were not committed because the group
  rebalanced while they were written (harmless: the new owner writes the same rows again).
- ``projector_lag{kind,topic,partition}``: records past the projector's position, per owned
  partition; ``kind`` is the loop that owns it (each kind has a consumer group of its own).
- ``projector_last_commit_timestamp_seconds{kind}``: when that loop last committed offsets (a
  stopped loop is one whose lag stays above zero while this stays still).
"""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from observability.freshness import COUNT_AGE_BUCKETS_S

log = logging.getLogger("projector")

# A batch of up to 5,000 rows, written concurrently: milliseconds when healthy, seconds when not.
WRITE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KINDS = ("total", "user")

registry = CollectorRegistry()
records = Counter("projector_records", "Records consumed", ["kind"], registry=registry)
rows_written = Counter("projector_rows_written", "Rows Cassandra acknowledged", ["kind"], registry=registry)
write_seconds = Histogram(
    "projector_write_seconds", "Cassandra write latency of one batch's rows, retries included", ["kind"],
    buckets=WRITE_BUCKETS_S, registry=registry,
)
count_age = Histogram(
    "projector_count_age_seconds", "From the newest clap in a total reaching a gateway to the total being "
    "written to Cassandra", buckets=COUNT_AGE_BUCKETS_S, registry=registry,
)
write_retries = Counter("projector_write_retries", "Cassandra writes that failed transiently and were retried", registry=registry)
lag = Gauge("projector_lag", "Records past the projector's position", ["kind", "topic", "partition"], registry=registry)
commits_lost = Counter(
    "projector_commits_lost", "Batches whose offsets were not committed because the group rebalanced meanwhile", registry=registry
)
last_commit = Gauge("projector_last_commit_timestamp_seconds", "When offsets were last committed", ["kind"], registry=registry)
for kind in KINDS:  # exported at 0 from the start, so rate() sees the first record
    records.labels(kind)
    rows_written.labels(kind)


def serve(host: str, port: int) -> bool:
    """Start the metrics server; a port already taken is logged, not fatal: projecting matters more."""
    try:
        start_http_server(port, host, registry=registry)
    except OSError as error:
        log.error("metrics not served: cannot listen on %s:%d (%s)", host, port, error)
        return False
    log.info("metrics on http://%s:%d/metrics", host, port)
    return True
