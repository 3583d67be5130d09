"""The gateway process's heap steward (observability/heap.py), seen from outside: /metrics reports every
collection's pause, and the frozen heap is swept exactly when enough connections have closed."""
from __future__ import annotations

import asyncio
import time

from tests.support.clients import Reader
from tests.support.scrape import scrape, value

SWEEP_AFTER = 20


async def metric(embedded, name: str, **labels: str) -> float:
    samples, _ = await asyncio.to_thread(scrape, f"{embedded.base_url}/metrics")
    return value(samples, name, **labels)


async def metric_when(embedded, name: str, predicate, timeout_s: float, **labels: str) -> float:
    """The metric once ``predicate`` holds for it, or its last value when ``timeout_s`` ran out."""
    deadline = time.monotonic() + timeout_s
    while not predicate(seen := await metric(embedded, name, **labels)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return seen


async def test_the_frozen_heap_is_swept_once_as_many_connections_closed_as_the_floor(embedded):
    embedded.stop()
    embedded.start(CLAP_GC_FREEZE_EVERY_S="0.1", CLAP_GC_SWEEP_AFTER_CLOSED=str(SWEEP_AFTER))
    # Young collections are the steward's own every tick: their pauses are in /metrics.
    assert await metric_when(embedded, "gateway_gc_pause_seconds_count", lambda n: n >= 5, 10, generation="1") >= 5

    readers = await Reader.open_joined(embedded.ws_url, "why-logs-win", SWEEP_AFTER)
    for reader in readers[:-1]:
        await reader.close()
    # One short of the floor: no sweep, however long we wait for one.
    await asyncio.sleep(1.0)
    assert await metric(embedded, "gateway_gc_sweeps_total") == 0
    full_before = await metric(embedded, "gateway_gc_pause_seconds_count", generation="2")
    await readers[-1].close()
    assert await metric_when(embedded, "gateway_gc_sweeps_total", lambda n: n == 1, 10) == 1
    # The sweep is a full collection, and its pause is reported with the others (from the next
    # tick). CPython may run full collections of its own (of what is newer than the last freeze),
    # so the count grows by the sweep at least, not exactly.
    full_after = await metric_when(embedded, "gateway_gc_pause_seconds_count", lambda n: n > full_before, 5,
                                   generation="2")
    assert full_after >= full_before + 1
    # Counted again from the sweep: the same closed connections do not sweep twice.
    await asyncio.sleep(1.0)
    assert await metric(embedded, "gateway_gc_sweeps_total") == 1
