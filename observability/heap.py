"""A service's garbage collector: the long-lived heap frozen out of its scans, swept on our terms.

CPython's cycle collector stops the event loop for a full collection, and a full collection
visits every container object the process holds. A gateway holds a few hundred per open
connection, so with 5,000 readers a full collection took 170-320 ms (the gateway's log in a
`loadtest hot` run at 1,000 claps/s), and CPython ran one whenever a quarter as many objects
again had outlived two young collections: a few times a minute under clap traffic, each a
stall that every reader of a hot room saw as a late total (the per-clap p99 of that run). A
processor worker counting a backlog ran one every second, 110-150 ms each: a tenth of its time
(docs/BENCHMARKS.md §4.2).

``HeapSteward`` keeps full collections off the long-lived heap. Every ``freeze_every_s`` it
collects the young generations (the short-lived garbage: cheap) and then freezes what is left
(``gc.freeze``), so the collector's own full collections only visit what was made since. A
frozen object is still freed the moment nothing refers to it; only garbage *cycles* among frozen
objects wait. A closed connection leaves such a cycle (its transport's, and the exception that
ended it), so a sweep (``gc.unfreeze`` then a full collection) runs once the connections closed
since the last sweep number as many as are open now (at least ``sweep_after_closed``), or
``sweep_every_s`` has passed: a pause as long as before, but once per turnover of the audience
rather than several times a minute. A service without connections (the processor) sweeps on
time alone. Every collection's pause is reported (``on_pause``), from the steward's tick rather
than from inside the collector, where taking a metric's lock could deadlock against the very
code the collection interrupted.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("heap")


class Collector(Protocol):
    """The parts of the ``gc`` module the steward uses (a fake stands in for it in tests)."""

    callbacks: list[Callable[[str, dict[str, Any]], None]]

    def collect(self, generation: int = 2) -> int: ...
    def freeze(self) -> None: ...
    def unfreeze(self) -> None: ...


def _no_connections() -> int:
    return 0


class HeapSteward:
    def __init__(
        self,
        *,
        open_connections: Callable[[], int] = _no_connections,
        closed_connections: Callable[[], int] = _no_connections,
        freeze_every_s: float = 1.0,
        sweep_every_s: float = 900.0,
        sweep_after_closed: int = 1000,
        on_pause: Callable[[int, float], None] | None = None,
        on_sweep: Callable[[float, int], None] | None = None,
        collector: Collector = gc,  # type: ignore[assignment]
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.open_connections = open_connections
        self.closed_connections = closed_connections
        self.freeze_every_s = freeze_every_s
        self.sweep_every_s = sweep_every_s
        self.sweep_after_closed = sweep_after_closed
        self._on_pause = on_pause
        self._on_sweep = on_sweep
        self._gc = collector
        self._clock = clock
        self._closed_at_sweep = closed_connections()
        self._last_sweep = clock()
        self._collection_began: float | None = None
        self._pauses: deque[tuple[int, float]] = deque(maxlen=10_000)
        self.sweeps = 0

    # -- pauses: every collection, ours or CPython's ----------------------------------------

    def watch_pauses(self) -> None:
        if self._on_pause is not None and self._time_collection not in self._gc.callbacks:
            self._gc.callbacks.append(self._time_collection)

    def unwatch_pauses(self) -> None:
        if self._time_collection in self._gc.callbacks:
            self._gc.callbacks.remove(self._time_collection)

    def _time_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Inside the collector: note the pause and nothing else (an append is atomic, takes no lock).
        if phase == "start":
            self._collection_began = self._clock()
        elif self._collection_began is not None:
            self._pauses.append((info["generation"], self._clock() - self._collection_began))
            self._collection_began = None

    def report_pauses(self) -> None:
        if self._on_pause is None:
            self._pauses.clear()
            return
        while self._pauses:
            self._on_pause(*self._pauses.popleft())

    # -- the policy ------------------------------------------------------------------------

    def sweep_due(self) -> bool:
        closed = self.closed_connections() - self._closed_at_sweep
        if closed >= max(self.sweep_after_closed, self.open_connections()):
            return True
        return self._clock() - self._last_sweep >= self.sweep_every_s

    def tick(self) -> None:
        """One turn: a sweep if one is due, else the young generations collected and the rest frozen."""
        self.report_pauses()
        if self.sweep_due():
            self.sweep()
        else:
            self._gc.collect(1)
        self._gc.freeze()

    def sweep(self) -> None:
        began = self._clock()
        self._gc.unfreeze()
        found = self._gc.collect(2)
        took = self._clock() - began
        self._closed_at_sweep = self.closed_connections()
        self._last_sweep = self._clock()
        self.sweeps += 1
        if self._on_sweep is not None:
            self._on_sweep(took, found)
        log.info("heap sweep: %d unreachable objects freed in %.0f ms", found, took * 1000)

    async def run(self, report_every_s: float = 1.0) -> None:
        """Freeze and sweep as above; with ``freeze_every_s`` 0, only report CPython's own pauses."""
        self.watch_pauses()
        try:
            while True:
                if self.freeze_every_s > 0:
                    self.tick()
                    await asyncio.sleep(self.freeze_every_s)
                else:  # CPython's collector alone, still measured: the pauses freezing would save
                    self.report_pauses()
                    await asyncio.sleep(report_every_s)
        finally:
            self.unwatch_pauses()
            self.report_pauses()
            self._gc.unfreeze()  # hand the heap back to CPython's own collector
