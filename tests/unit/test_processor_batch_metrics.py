"""The processor counts an event delivered past a hole once: when it is taken, not when it is
first read and held back (a worker whose first delivery skipped offset 0 read 9 events for 6
claps, and the metrics test that says one event per clap failed)."""
from __future__ import annotations

from core.messages import ClapRecorded
from core.processing import LogEvent
from processor import metrics


def test_events_past_a_hole_are_counted_when_taken_and_malformed_ones_too():
    clap = ClapRecorded("a", "u", 1, "c", 0)
    events_before = metrics.events._value.get()
    malformed_before = metrics.malformed._value.get()
    # Offset 0 was skipped: 1..3 are read but held back (one of them malformed).
    held = [LogEvent(3, 1, clap), LogEvent(3, 2, None), LogEvent(3, 3, clap)]
    metrics.batches.done(held, [], holding=0, taken=0, is_taken=lambda partition, offset: False)
    assert metrics.events._value.get() == events_before
    assert metrics.malformed._value.get() == malformed_before
    # Read again from the hole: all four taken, each counted once.
    again = [LogEvent(3, 0, clap)] + held
    metrics.batches.done(again, [], holding=0, taken=4, is_taken=lambda partition, offset: True)
    assert metrics.events._value.get() == events_before + 4
    assert metrics.malformed._value.get() == malformed_before + 1
