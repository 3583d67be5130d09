"""The gateway process's heap steward (gateway/heap.py), seen from outside: /metrics reports every
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


async def wait_for_metric(embedded, name: str, wanted: float, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while (seen := await metric(embedded, name)) != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return seen


async def test_the_frozen_heap_is_swept_once_as_many_connections_closed_as_the_floor(embedded):
    embedded.stop()
    embedded.start(CLAP_GC_FREEZE_EVERY_S="0.1", CLAP_GC_SWEEP_AFTER_CLOSED=str(SWEEP_AFTER))
    # Young collections are the steward's own every tick: their pauses are in /metrics.
    deadline = time.monotonic() + 10
    while await metric(embedded, "gateway_gc_pause_seconds_count", generation="1") < 5:
        assert time.monotonic() < deadline, "no young collections reported"
        await asyncio.sleep(0.1)

    readers = await Reader.open_joined(embedded.ws_url, "why-logs-win", SWEEP_AFTER)
    for reader in readers[:-1]:
        await reader.close()
    # One short of the floor: no sweep, however long we wait for one.
    await asyncio.sleep(1.0)
    assert await metric(embedded, "gateway_gc_sweeps_total") == 0
    await readers[-1].close()
    assert await wait_for_metric(embedded, "gateway_gc_sweeps_total", 1, 10) == 1
    # The sweep is a full collection, and its pause is reported with the others (from the next tick).
    deadline = time.monotonic() + 5
    while await metric(embedded, "gateway_gc_pause_seconds_count", generation="2") < 1:
        assert time.monotonic() < deadline, "the sweep's pause was not reported"
        await asyncio.sleep(0.1)
    # Counted again from the sweep: the same closed connections do not sweep twice.
    await asyncio.sleep(1.0)
    assert await metric(embedded, "gateway_gc_sweeps_total") == 1
