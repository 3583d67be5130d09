"""Who is reading each article now, over every gateway (core.presence has the rules).

Three loops per gateway:
- report: every ``interval_s``, if this gateway's per-article reader counts changed (or at least
  every two intervals, so others know it is alive), publish one report with all of them;
- hear: apply every gateway's reports (this one's included) to a :class:`PresenceTally`;
- announce: every ``interval_s``, forget gateways gone quiet and send
  ``{"type":"presence","article":ID,"reading":N}`` to each room here whose sum changed: one frame
  per room per interval at most, encoded once and written to every reader of the room.

The bus is the Kafka topic ``presence`` in the distributed mode (gateway.kafka_adapters) and
:class:`LocalPresenceBus` in the embedded one.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from core.presence import PresenceReport, PresenceTally, presence_frame
from gateway.rooms import RoomRegistry, text_frame

log = logging.getLogger(__name__)

# A reader's socket that is full keeps the newest presence frame per room under this key, apart
# from the room's count frame (article ids cannot hold a colon).
PRESENCE_FRAME_KIND = "presence"


class PresenceBus(Protocol):
    async def publish(self, report: PresenceReport) -> None: ...

    async def subscribe(self) -> AsyncIterator[PresenceReport]: ...

    async def close(self) -> None: ...


class LocalPresenceBus:
    """Reports between the gateways of one process (the embedded mode, in-process tests).

    Each subscriber has a bounded queue; one that falls behind loses the oldest reports, which
    costs nothing but a second: the next report of each gateway holds everything it has.
    """

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._queues: list[asyncio.Queue[PresenceReport]] = []

    async def publish(self, report: PresenceReport) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(report)

    async def subscribe(self) -> AsyncIterator[PresenceReport]:
        queue: asyncio.Queue[PresenceReport] = asyncio.Queue(self.queue_size)
        self._queues.append(queue)

        async def drain() -> AsyncIterator[PresenceReport]:
            try:
                while True:
                    yield await queue.get()
            finally:
                self._queues.remove(queue)

        return drain()

    async def close(self) -> None:
        return None


class Presence:
    """One gateway's part: report its readers, hear everyone's, tell its rooms."""

    def __init__(
        self,
        gateway_name: str,
        bus: PresenceBus,
        rooms: RoomRegistry,
        reading_here: Callable[[], dict[str, int]],
        clock_ms: Callable[[], int],
        *,
        interval_s: float = 1.0,
        ttl_ms: int = 5_000,
    ) -> None:
        # A restarted gateway is a new reporter: its sequence starts again, and the old one's
        # report simply expires.
        self.gateway = f"{gateway_name}-{secrets.token_hex(4)}"
        self.bus = bus
        self.rooms = rooms
        self.reading_here = reading_here
        self.clock_ms = clock_ms
        self.interval_s = interval_s
        self.tally = PresenceTally(ttl_ms)
        self._seq = 0
        self._reported: dict[str, int] | None = None
        self._quiet_intervals = 0
        self._changed: set[str] = set()
        self._announced: dict[str, int] = {}  # article -> the sum its room here was last told
        self.frames_sent = 0
        self.reports_sent = 0

    def reading(self, article: str) -> int:
        return self.tally.reading(article)

    async def run(self) -> None:
        reports = await self.bus.subscribe()
        await asyncio.gather(self._hear(reports), self._report_and_announce())

    async def _hear(self, reports: AsyncIterator[PresenceReport]) -> None:
        async for report in reports:
            self._changed |= self.tally.apply(report, self.clock_ms())

    async def _report_and_announce(self) -> None:
        while True:
            try:
                await self.report()
            except Exception as error:  # the bus away: readers keep their last numbers
                log.warning("presence report not sent: %r", error)
            await asyncio.sleep(self.interval_s)
            self.announce()

    async def report(self) -> None:
        counts = self.reading_here()
        self._quiet_intervals += 1
        if counts == self._reported and self._quiet_intervals < 2:
            return
        self._seq += 1
        await self.bus.publish(PresenceReport(self.gateway, self._seq, counts, self.clock_ms()))
        self._reported = counts
        self._quiet_intervals = 0
        self.reports_sent += 1

    def announce(self) -> None:
        """Tell each room here whose sum changed since it was last told; forget rooms gone."""
        self._changed |= self.tally.expire(self.clock_ms())
        changed, self._changed = self._changed, set()
        for article in [a for a in self._announced if a not in self.rooms.rooms]:
            del self._announced[article]
        for article in changed:
            if article not in self.rooms.rooms:
                continue
            reading = self.tally.reading(article)
            if self._announced.get(article) == reading:
                continue
            self._announced[article] = reading
            self.frames_sent += self.rooms.send_to_room(
                article, PRESENCE_FRAME_KIND, text_frame(presence_frame(article, reading))
            )

    def joined(self, article: str) -> bytes | None:
        """The presence message for a reader who just joined ``article`` (None: nobody known yet)."""
        reading = self.tally.reading(article)
        return presence_frame(article, reading) if reading else None

    async def stop(self) -> None:
        """Tell the others at once that this gateway's readers are gone (else they expire)."""
        self._seq += 1
        try:
            await asyncio.wait_for(self.bus.publish(PresenceReport(self.gateway, self._seq, {}, self.clock_ms())), 2)
        except Exception as error:
            log.warning("final presence report not sent: %r", error)
