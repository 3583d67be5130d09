"""The heap steward's policy (observability/heap.py), against a fake collector and clock."""
from __future__ import annotations

import gc
from typing import Any

from observability.heap import HeapSteward


class FakeCollector:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.calls: list[str] = []
        self.frozen = False

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect{generation}")
        return 7

    def freeze(self) -> None:
        self.calls.append("freeze")
        self.frozen = True

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")
        self.frozen = False


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def steward(collector: FakeCollector, clock: Clock, connections: dict[str, int], **options: Any) -> HeapSteward:
    return HeapSteward(
        open_connections=lambda: connections["open"], closed_connections=lambda: connections["closed"],
        collector=collector, clock=clock, **options,
    )


def test_a_tick_collects_the_young_generations_then_freezes_what_is_left() -> None:
    collector, clock = FakeCollector(), Clock()
    heap = steward(collector, clock, {"open": 5000, "closed": 0})
    heap.tick()
    heap.tick()
    assert collector.calls == ["collect1", "freeze", "collect1", "freeze"]
    assert heap.sweeps == 0


def test_a_sweep_comes_once_as_many_connections_closed_as_are_open() -> None:
    collector, clock = FakeCollector(), Clock()
    connections = {"open": 5000, "closed": 300}
    heap = steward(collector, clock, connections, sweep_after_closed=1000)
    connections["closed"] = 300 + 4999
    heap.tick()
    assert heap.sweeps == 0 and "unfreeze" not in collector.calls
    connections["closed"] = 300 + 5000
    heap.tick()
    assert collector.calls[-3:] == ["unfreeze", "collect2", "freeze"]
    assert heap.sweeps == 1
    # counted again from the sweep: the same closed connections do not sweep twice
    heap.tick()
    assert heap.sweeps == 1 and collector.calls[-2:] == ["collect1", "freeze"]


def test_a_small_gateway_sweeps_after_its_floor_of_closed_connections_not_after_each_close() -> None:
    collector, clock = FakeCollector(), Clock()
    connections = {"open": 3, "closed": 0}
    heap = steward(collector, clock, connections, sweep_after_closed=1000)
    connections["closed"] = 999
    heap.tick()
    assert heap.sweeps == 0
    connections["closed"] = 1000
    heap.tick()
    assert heap.sweeps == 1


def test_a_sweep_comes_after_sweep_every_s_even_without_closed_connections() -> None:
    collector, clock = FakeCollector(), Clock()
    heap = steward(collector, clock, {"open": 10, "closed": 0}, sweep_every_s=900)
    clock.now += 899.9
    heap.tick()
    assert heap.sweeps == 0
    clock.now += 0.1
    heap.tick()
    assert heap.sweeps == 1
    clock.now += 899.9
    heap.tick()
    assert heap.sweeps == 1


def test_every_collection_pause_is_reported_with_its_generation() -> None:
    collector, clock = FakeCollector(), Clock()
    pauses: list[tuple[int, float]] = []
    sweeps: list[tuple[float, int]] = []
    heap = steward(collector, clock, {"open": 0, "closed": 0}, on_pause=lambda g, s: pauses.append((g, s)),
                   on_sweep=lambda s, found: sweeps.append((s, found)))
    heap.watch_pauses()
    heap.watch_pauses()  # once only
    assert len(collector.callbacks) == 1
    [callback] = collector.callbacks
    callback("start", {"generation": 2})
    clock.now += 0.25
    callback("stop", {"generation": 2, "collected": 3})
    callback("start", {"generation": 0})
    clock.now += 0.001
    callback("stop", {"generation": 0, "collected": 0})
    assert pauses == []  # noted inside the collector, reported from the tick
    heap.tick()
    assert [(g, round(s, 6)) for g, s in pauses] == [(2, 0.25), (0, 0.001)]
    heap.sweep()
    assert sweeps == [(0.0, 7)]
    heap.tick()
    assert len(pauses) == 2  # the fake collector calls no callbacks of its own
    heap.unwatch_pauses()
    assert collector.callbacks == []


async def test_run_freezes_the_real_heap_and_hands_it_back_when_stopped() -> None:
    import asyncio

    assert gc.get_freeze_count() == 0
    heap = HeapSteward(open_connections=lambda: 0, closed_connections=lambda: 0, freeze_every_s=0.01,
                       on_pause=lambda g, s: None)
    task = asyncio.create_task(heap.run())
    await asyncio.sleep(0.05)
    frozen = gc.get_freeze_count()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert frozen > 0  # the objects the test process holds, frozen out of full collections
    assert gc.get_freeze_count() == 0
    assert heap._time_collection not in gc.callbacks


async def test_without_freezing_it_only_reports_cpythons_own_pauses() -> None:
    import asyncio

    pauses: list[tuple[int, float]] = []
    heap = HeapSteward(freeze_every_s=0, on_pause=lambda g, s: pauses.append((g, s)))
    task = asyncio.create_task(heap.run(report_every_s=0.01))
    await asyncio.sleep(0.02)
    gc.collect(2)
    await asyncio.sleep(0.03)
    frozen = gc.get_freeze_count()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert frozen == 0
    assert 2 in [generation for generation, _ in pauses]  # the full collection above, timed
    assert heap.sweeps == 0
    assert heap._time_collection not in gc.callbacks
