"""processor_rate's reading of a worker's collector pauses from its /metrics page."""
from loadtest.processor_rate import collector_pauses

PAGE = """# HELP processor_gc_pause_seconds The worker stopped for one garbage collection
# TYPE processor_gc_pause_seconds histogram
processor_gc_pause_seconds_bucket{generation="2",le="0.1"} 1.0
processor_gc_pause_seconds_count{generation="2"} 3.0
processor_gc_pause_seconds_sum{generation="2"} 0.31
processor_gc_pause_seconds_count{generation="0"} 1204.0
processor_gc_pause_seconds_sum{generation="0"} 0.25
processor_events_total 150000.0
"""


def test_collections_and_seconds_per_generation() -> None:
    assert collector_pauses(PAGE) == {"0": (1204, 0.25), "2": (3, 0.31)}


def test_a_page_without_the_histogram_gives_nothing() -> None:
    assert collector_pauses("# not read: ConnectionRefusedError()") == {}
