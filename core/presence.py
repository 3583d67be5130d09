"""Who is reading what now, summed over every gateway: the rules, free of I/O.

Each gateway reports, about once a second, how many readers each article has on it: one report
per gateway holding every article it has readers of (not a message per join or leave). Reports
carry a per-gateway sequence, so a late or repeated report never undoes a newer one. A gateway
that stops reporting (it crashed, or was cut off) is forgotten ``ttl_ms`` after its last
report, so its readers stop counting; a gateway that stops cleanly says so with an empty report.
Every gateway keeps the newest report of each gateway and the sum per article, and tells its own
rooms when a sum changes (at most once a second per room, see gateway.presence).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

PRESENCE_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class PresenceReport:
    """``gateway`` has ``counts[article]`` readers of each article listed (none of the others).

    ``gateway`` names one run of one gateway process (a restart is a new name), ``seq`` grows
    with every report of it, ``at_ms`` is when it was made.
    """

    gateway: str
    seq: int
    counts: Mapping[str, int] = field(default_factory=dict)
    at_ms: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"v": PRESENCE_SCHEMA_VERSION, "type": "presence-report", "gateway": self.gateway, "seq": self.seq,
             "counts": dict(self.counts), "at": self.at_ms}
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> PresenceReport:
        doc: dict[str, Any] = orjson.loads(raw)
        counts = doc["counts"]
        if not isinstance(counts, dict) or not all(isinstance(n, int) and n > 0 for n in counts.values()):
            raise ValueError("counts must map article ids to positive integers")
        return cls(str(doc["gateway"]), int(doc["seq"]), counts, int(doc.get("at", 0)))


def presence_frame(article: str, reading: int) -> bytes:
    """The websocket message that tells a room how many read it now."""
    return orjson.dumps({"type": "presence", "article": article, "reading": reading})


class PresenceTally:
    """The newest report of every gateway heard from, and the sum of readers per article."""

    def __init__(self, ttl_ms: int = 5_000) -> None:
        self.ttl_ms = ttl_ms
        self._reports: dict[str, PresenceReport] = {}
        self._heard_ms: dict[str, int] = {}
        self._sums: dict[str, int] = {}

    def reading(self, article: str) -> int:
        return self._sums.get(article, 0)

    @property
    def gateways(self) -> set[str]:
        return set(self._reports)

    def apply(self, report: PresenceReport, now_ms: int) -> set[str]:
        """Take a gateway's report (heard at ``now_ms`` here); return the articles whose sum changed."""
        held = self._reports.get(report.gateway)
        if held is not None and report.seq <= held.seq:
            return set()  # older than what is held: a reordering or a replay
        self._heard_ms[report.gateway] = now_ms
        self._reports[report.gateway] = report
        return self._move(held.counts if held is not None else {}, report.counts)

    def expire(self, now_ms: int) -> set[str]:
        """Forget gateways not heard from for ``ttl_ms``; return the articles whose sum changed."""
        changed: set[str] = set()
        for gateway in [g for g, heard in self._heard_ms.items() if heard < now_ms - self.ttl_ms]:
            del self._heard_ms[gateway]
            changed |= self._move(self._reports.pop(gateway).counts, {})
        return changed

    def _move(self, before: Mapping[str, int], after: Mapping[str, int]) -> set[str]:
        changed = set()
        for article in before.keys() | after.keys():
            difference = after.get(article, 0) - before.get(article, 0)
            if difference:
                changed.add(article)
                total = self._sums.get(article, 0) + difference
                if total:
                    self._sums[article] = total
                else:
                    del self._sums[article]
        return changed
