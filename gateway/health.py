"""What this gateway's dependencies are doing lately, for ``/readyz``.

The gateway learns that the clap log or the counter store is away only by using them, so an
outage is recorded on a failed call and cleared by the next call that succeeds. A failure older
than ``hold_s`` with no call since is forgotten: nothing has shown the dependency is still away.
Time comes in as an argument (seconds since the Unix epoch), so this is tested without a clock.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(slots=True)
class _Outage:
    since_s: float
    last_s: float
    error: str


class Outages:
    def __init__(self, hold_s: float = 30.0) -> None:
        self.hold_s = hold_s
        self._current: dict[str, _Outage] = {}

    def failed(self, dependency: str, now_s: float, error: BaseException) -> None:
        outage = self._current.get(dependency)
        if outage is None or now_s - outage.last_s > self.hold_s:
            self._current[dependency] = _Outage(now_s, now_s, _describe(error))
        else:
            outage.last_s = now_s
            outage.error = _describe(error)

    def recovered(self, dependency: str) -> None:
        self._current.pop(dependency, None)

    def reasons(self, now_s: float) -> list[str]:
        """One line per dependency that failed within ``hold_s`` and has not answered since."""
        return [
            f"{dependency} unavailable since {_iso(outage.since_s)}: {outage.error}"
            for dependency, outage in sorted(self._current.items())
            if now_s - outage.last_s <= self.hold_s
        ]


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
