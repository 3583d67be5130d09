"""Telling readers when their count is catching up (core.counting has the rules).

The processor's statuses come in on the fan-out feed beside the totals. Whenever the counting
of a partition with rooms here turns "catching up" or "live" (a status said so, or the
processor fell silent), each of its rooms gets one frame
``{"type":"counting","article":ID,"state":S}``, encoded once per room and written through the
room's bounded path: a reader whose socket is full keeps only the newest such frame per room,
so a slow reader holds one frame and delays nobody. A reader who joins a room that was last told
"catching up" is told so with its join answer.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from core.counting import STALE_MS, CountingWatch, counting_frame
from core.messages import CATCHING_UP, CountingStatus
from gateway.rooms import Reader, RoomRegistry, text_frame

# A reader's socket that is full keeps the newest counting frame per room under this key.
COUNTING_FRAME_KIND = "counting"


class CountingNotices:
    """One gateway's part: hear the statuses, look at the time, tell the rooms."""

    def __init__(self, rooms: RoomRegistry, clock_ms: Callable[[], int], *, stale_ms: int = STALE_MS,
                 look_every_s: float = 0.5) -> None:
        self.rooms = rooms
        self.clock_ms = clock_ms
        self.stale_ms = stale_ms
        self.look_every_s = look_every_s
        self.watch: CountingWatch | None = None  # made once the feed says how many partitions it has
        self.frames_sent = 0

    def start(self, partitions: int) -> None:
        self.watch = CountingWatch(partitions, self.stale_ms)
        for article in self.rooms.rooms:  # rooms opened before the feed was subscribed
            self.watch.open(article, self.clock_ms())

    def opened(self, article: str) -> None:
        if self.watch is not None:
            self.watch.open(article, self.clock_ms())

    def closed(self, article: str) -> None:
        if self.watch is not None:
            self.watch.close(article)

    def heard(self, status: CountingStatus) -> None:
        if self.watch is None:
            return
        self.watch.heard(status, self.clock_ms())
        self.tell()  # a worker that came back is reported at once, not at the next look

    def tell(self) -> None:
        """Tell each room whose partition's counting changed since it was last told."""
        if self.watch is None:
            return
        for article, state in self.watch.changes(self.clock_ms()):
            self.frames_sent += self.rooms.send_to_room(
                article, COUNTING_FRAME_KIND, text_frame(counting_frame(article, state))
            )

    def joined(self, reader: Reader, article: str) -> None:
        """A reader joined ``article``'s room: tell it if the room was last told catching up."""
        if self.watch is not None and self.watch.told(article) == CATCHING_UP:
            self.frames_sent += self.rooms.send_to_reader(
                reader, article, COUNTING_FRAME_KIND, text_frame(counting_frame(article, CATCHING_UP))
            )

    async def run(self) -> None:
        """Look every ``look_every_s``: silence has no message to wake anyone."""
        while True:
            await asyncio.sleep(self.look_every_s)
            self.tell()

    def readiness(self) -> dict[str, Any]:
        """For /readyz: which partitions' counts readers here were told are catching up."""
        lapses = self.watch.lapses(self.clock_ms()) if self.watch is not None else []
        if not lapses:
            return {"state": "live"}
        return {
            "state": "catching_up",
            "articles": sum(lapse.articles for lapse in lapses),
            "partitions": [
                {"partition": lapse.partition, "since": _iso(lapse.since_ms), "reason": lapse.reason,
                 "articles": lapse.articles}
                for lapse in lapses
            ],
        }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
