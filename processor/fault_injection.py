"""A test hook that makes a worker's delivery skip claps, the way Faust's recovery can.

Faust empties its stream queues when a recovery ends, and on a partition with no committed
offset nothing seeks back to the records it dropped (docs/RELIABILITY.md). That happens by
timing only, so an integration test cannot make it happen at will; this hook drops chosen events
of an article from the worker's delivery once, and the test checks that the real adapter reads
them again from Kafka. Set through PROCESSOR_TEST_DROP_ONCE; empty (the default) drops nothing.
"""
from __future__ import annotations

from collections.abc import Iterable

from core.processing import LogEvent


class DeliveryDropper:
    """Drops, once, the events of an article at chosen places of the order they are delivered.

    ``spec`` is ``article:first:count[,...]``: of the events of ``article`` delivered, those at
    places ``first`` to ``first + count - 1`` (from 0) are dropped; a later re-delivery of the
    same offsets passes.
    """

    def __init__(self, spec: str) -> None:
        self.ranges: dict[str, list[range]] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            article, first, count = part.rsplit(":", 2)
            self.ranges.setdefault(article, []).append(range(int(first), int(first) + int(count)))
        self.delivered: dict[str, int] = {}
        self.seen: set[tuple[int, int]] = set()  # (partition, offset) of the articles watched

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def filter(self, events: Iterable[LogEvent]) -> list[LogEvent]:
        kept = []
        for event in events:
            article = event.clap.article if event.clap is not None else None
            where = (event.partition, event.offset)
            if article in self.ranges and where not in self.seen:  # a first delivery
                self.seen.add(where)
                place = self.delivered.get(article, 0)
                self.delivered[article] = place + 1
                if any(place in r for r in self.ranges[article]):
                    continue
            kept.append(event)
        return kept
