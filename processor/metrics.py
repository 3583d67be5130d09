"""The processor's Prometheus metrics, served as a page of Faust's own web server: GET /metrics
on PROCESSOR_WEB_PORT (the port the probes already use), so a worker needs no second port and
several workers on one host need nothing more than their distinct web ports.

- ``processor_events_total``: clap events taken from the log into the count (an event delivered
  past a hole in the delivery is taken when the partition is read again from the hole, and
  counted then, once); ``processor_malformed_events_total`` those of them that did not parse.
- ``processor_batch_seconds``: time to apply one batch: the pure step, the state write-back and
  Kafka's acknowledgement of every write and total of the batch.
- ``processor_announcements_total``: totals sent to the fan-out topic.
- ``processor_gc_pause_seconds{generation}``: how long each garbage collection stopped the
  worker; ``processor_gc_sweeps_total``: full collections of the frozen heap (observability/heap.py).
- ``processor_lag{partition}``: clap events in the log past this worker's position, per owned
  partition of the clap topic, refreshed every ``LAG_EVERY_S``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from core.processing import LogEvent

log = logging.getLogger("processor")

LAG_EVERY_S = 5.0
# Batches take ~10-15 ms under load (docs/BENCHMARKS.md); a restore or a stalled producer, seconds.
BATCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

registry = CollectorRegistry()
events = Counter("processor_events", "Clap events taken from the clap log into the count, each once per worker that took it",
                 registry=registry)
malformed = Counter("processor_malformed_events", "Clap log records that did not parse and were skipped", registry=registry)
batch_seconds = Histogram(
    "processor_batch_seconds", "Time to apply one batch, its state writes and totals acknowledged by Kafka",
    buckets=BATCH_BUCKETS_S, registry=registry,
)
announcements = Counter("processor_announcements", "Totals sent to the fan-out topic", registry=registry)
lag = Gauge("processor_lag", "Clap events in the log past this worker's position", ["partition"], registry=registry)
catching_up = Gauge(
    "processor_catching_up_partitions", "Owned partitions whose totals are held back until the log is read to its end",
    registry=registry,
)

# The gateway's buckets: a young collection takes about a millisecond, a full one ~100 ms.
GC_PAUSE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
gc_pause = Histogram(
    "processor_gc_pause_seconds", "The worker stopped for one garbage collection", ["generation"],
    buckets=GC_PAUSE_BUCKETS_S, registry=registry,
)
gc_sweeps = Counter("processor_gc_sweeps", "Full collections of the frozen heap (observability/heap.py)", registry=registry)


class BatchClock:
    """Times the batches of the counting loop: ``started`` at the top, ``done`` at the bottom."""

    def __init__(self) -> None:
        self._since = time.perf_counter()

    def started(self) -> None:
        self._since = time.perf_counter()

    def done(self, batch: Sequence[LogEvent], updates: Sequence[Any], holding: int, taken: int,
             is_taken: Callable[[int, int], bool]) -> None:
        """``taken`` of the batch's events were applied (``is_taken(partition, offset)``); the
        rest lie past a hole and come again."""
        events.inc(taken)
        malformed.inc(sum(1 for event in batch if event.clap is None and is_taken(event.partition, event.offset)))
        announcements.inc(len(updates))
        catching_up.set(holding)
        batch_seconds.observe(time.perf_counter() - self._since)


batches = BatchClock()


def install(app: faust.App, clap_topic: str) -> None:
    """Serve /metrics on the app's web server and keep the lag gauges fresh."""

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp takes a charset only through the header, not its content_type argument.
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.timer(LAG_EVERY_S)
    async def measure_lag() -> None:
        await refresh_lag(app, clap_topic)


async def refresh_lag(app: faust.App, clap_topic: str) -> None:
    owned = [tp for tp in app.consumer.assignment() if tp.topic == clap_topic]
    seen = set()
    for tp in owned:
        try:
            position = await app.consumer.position(tp)
            end = app.consumer.highwater(tp)
        except Exception as error:  # noqa: BLE001 - a gauge must never stop the worker
            # Not fetched yet, or revoked meanwhile (a rebalance): the next round will know.
            log.debug("no lag for %s yet: %r", tp, error)
            continue
        if position is None or end is None:
            continue
        lag.labels(str(tp.partition)).set(max(end - position, 0))
        seen.add(str(tp.partition))
    # A partition given to another worker is that worker's to report.
    for labels in list(lag._metrics):
        if labels[0] not in seen:
            lag.remove(*labels)
