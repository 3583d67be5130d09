"""The totals readers are sent, followed on the fan-out topic during a run.

An ingest run's settle reads each article's total over HTTP, which without readers in the room is
the durable copy in Cassandra (the projector's rows). What a reader of the article is sent is the
processor's announcement on the fan-out topic, which the gateways forward. This follower reads
that topic as a gateway does, from its end when the run starts, keeps each article's newest total
by position and when it last changed, so a run can say when the totals readers see reached
their final values, beside when the durable copy did.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer

from core.messages import CountChanged, decode_fan_out


class LiveTotals:
    """Each article's newest total on the fan-out topic, and when it last changed."""

    def __init__(self) -> None:
        self.newest: dict[str, CountChanged] = {}
        self.changed_at: dict[str, float] = {}

    def see(self, total: CountChanged, at: float) -> None:
        held = self.newest.get(total.article)
        if held is not None and total.position() <= held.position():
            return  # an older or repeated announcement: readers keep the newer one
        self.newest[total.article] = total
        if held is None or held.total != total.total:
            self.changed_at[total.article] = at

    def settled_at(self, finals: Mapping[str, int]) -> tuple[float | None, list[str]]:
        """When the last of ``finals``' articles reached its final total here, and the articles
        whose newest total here is not final (then the time is None)."""
        behind = sorted(a for a, total in finals.items()
                        if a not in self.newest or self.newest[a].total != total)
        if behind or not finals:
            return None, behind
        return max(self.changed_at[a] for a in finals), []


async def follow(bootstrap: str, topic: str, live: LiveTotals, started: asyncio.Event) -> None:
    """Read ``topic`` from its end into ``live`` until cancelled; ``started`` once positioned."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)  # fixes "latest" now, before the first clap
        started.set()
        async for total in announced_totals(consumer):
            live.see(total, time.time())
    finally:
        await consumer.stop()


async def announced_totals(consumer: AIOKafkaConsumer) -> AsyncIterator[CountChanged]:
    """The totals a fan-out topic's consumer reads, past counting statuses and bad records."""
    async for record in consumer:
        try:
            announced = decode_fan_out(record.value)
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(announced, CountChanged):
            yield announced


def summary(live: LiveTotals, finals: Mapping[str, int], end: float) -> dict[str, Any]:
    at, behind = live.settled_at(finals)
    return {"settle_seconds_after_end": None if at is None else round(at - end, 2),
            "articles_not_final": len(behind)}
