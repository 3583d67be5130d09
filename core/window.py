"""Window coalescing: at most one announcement per article per window.

A window opens when the first clap of an article arrives after its previous announcement and is
due ``window_ms`` later; everything that arrives in between rides along. Pure arithmetic on
millisecond integers, like ``faust/windows.py``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _OpenWindow:
    opened_ms: int
    delta: int
    newest_at_ms: int


class WindowCoalescer:
    """Collects per-article deltas and says which windows are due."""

    def __init__(self, window_ms: int) -> None:
        if window_ms < 0:
            raise ValueError("window_ms must be >= 0")
        self.window_ms = window_ms
        self._open: dict[str, _OpenWindow] = {}

    def add(self, article: str, delta: int, at_ms: int, now_ms: int) -> None:
        """Record ``delta`` claps for ``article`` (0 still asks for an announcement)."""
        window = self._open.get(article)
        if window is None:
            self._open[article] = _OpenWindow(now_ms, delta, at_ms)
        else:
            window.delta += delta
            window.newest_at_ms = max(window.newest_at_ms, at_ms)

    def due(self, now_ms: int, *, force: bool = False) -> list[tuple[str, int, int]]:
        """Close and return ``(article, delta, newest_at_ms)`` for every window that is due."""
        closed = [
            article
            for article, window in self._open.items()
            if force or now_ms - window.opened_ms >= self.window_ms
        ]
        return [self._close(article) for article in closed]

    def _close(self, article: str) -> tuple[str, int, int]:
        window = self._open.pop(article)
        return (article, window.delta, window.newest_at_ms)

    def __len__(self) -> int:
        return len(self._open)
