"""Whether the counts readers see are live, or frozen while the processor catches up.

Claps are acked once they are in the log, whatever the processor is doing. While the worker
that owns a partition is dead, or reads the partition's log again after a restart or a
rebalance, every total of the partition's articles stands still while claps keep being acked.
Readers should be told, rather than watch a count that silently stopped.

The processor side (``counting_states``): each worker says, once a second, for every clap
partition it owns, whether it counts it live or is catching up. The gateway side
(``CountingWatch``): per fan-out partition, what was said lately, and whether the readers of
each article there were told "catching up" or "live". Silence for ``stale_ms`` counts as
catching up: the owner is dead, or nobody owns the partition.

Pure: no I/O, no clock; time comes in as milliseconds.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

import orjson

from core.messages import CATCHING_UP, COUNTING, LIVE, CountingStatus
from core.routing import shard_of

# How often a processor worker says how its counting goes, and how long a partition may go
# without a word before its counting is taken for stopped: five statuses, which allows for a
# worker's event loop stalling on a large batch.
SAY_EVERY_MS = 1_000
STALE_MS = 5_000

# Why a partition is not live, for /readyz.
SAID_CATCHING_UP = "the processor is catching up with the clap log"
SILENT = "no word from the processor"


def counting_states(owned: Iterable[int], held: Collection[int], *, counting: bool = True) -> dict[int, str]:
    """What a worker says about each partition it owns: ``catching_up`` for those whose totals
    it holds back (``held``: catching up with the log, or re-reading it from a skipped offset),
    and for all of them while it cannot count at all (``counting`` False: restoring its tables,
    rebalancing); ``live`` for the rest."""
    return {p: LIVE if counting and p not in held else CATCHING_UP for p in sorted(owned)}


def counting_frame(article: str, state: str) -> bytes:
    """The websocket message that tells a room whether its count is live."""
    return orjson.dumps({"type": COUNTING, "article": article, "state": state})


@dataclass(slots=True)
class _Said:
    state: str
    heard_ms: int


@dataclass(frozen=True, slots=True)
class Lapse:
    """A partition whose readers were told "catching up": since when, why, how many articles."""

    partition: int
    since_ms: int
    reason: str
    articles: int


class CountingWatch:
    """Per fan-out partition with readers here: what the processor said lately, and what the
    rooms of its articles were last told.

    A partition is live when some epoch's workers said "live" within ``stale_ms``: during a
    rebuild the new epoch catches up while the old one keeps the counts moving, and after it
    the retired epoch simply falls silent. A partition just opened here has had no chance to
    hear anything yet, so it counts as live until ``stale_ms`` has passed without a word.

    Rooms are told on transitions only (``changes``), once per change of their partition, and a
    reader joining a room is told only when the room was last told "catching up" (``told``).
    """

    def __init__(self, partitions: int, stale_ms: int = STALE_MS) -> None:
        if partitions < 1:
            raise ValueError(f"a topic has at least one partition, not {partitions}")
        if stale_ms <= 0:
            raise ValueError(f"stale_ms must be positive, not {stale_ms}")
        self.partitions = partitions
        self.stale_ms = stale_ms
        self._partition_of: dict[str, int] = {}
        self._articles: dict[int, set[str]] = {}  # partition -> its open rooms' articles
        self._opened_ms: dict[int, int] = {}  # partition -> when its first room opened
        self._said: dict[int, dict[int, _Said]] = {}  # partition -> epoch -> its newest status
        self._told: dict[int, str] = {}  # partition -> what its rooms were last told
        self._since_ms: dict[int, int] = {}  # partition -> when its rooms were told catching_up

    # -- rooms -------------------------------------------------------------------------------

    def open(self, article: str, now_ms: int) -> None:
        """A room for ``article`` opened here. Idempotent."""
        if article in self._partition_of:
            return
        partition = self._partition_of[article] = shard_of(article, self.partitions)
        articles = self._articles.setdefault(partition, set())
        if not articles:
            self._opened_ms[partition] = now_ms
            self._told[partition] = LIVE
        articles.add(article)

    def close(self, article: str) -> None:
        """The room closed. A partition without rooms is forgotten: nothing here reads it."""
        partition = self._partition_of.pop(article, None)
        if partition is None:
            return
        articles = self._articles[partition]
        articles.discard(article)
        if not articles:
            for held in (self._articles, self._opened_ms, self._said, self._told, self._since_ms):
                held.pop(partition, None)

    # -- what the processor says -------------------------------------------------------------

    def heard(self, status: CountingStatus, now_ms: int) -> None:
        """A worker's status arrived. Statuses of partitions without rooms here are dropped."""
        if status.partition not in self._articles:
            return
        said = self._said.setdefault(status.partition, {})
        for epoch in [e for e, s in said.items() if now_ms - s.heard_ms >= self.stale_ms]:
            del said[epoch]  # a retired epoch, or a dead rebuild: no longer says anything
        said[status.epoch] = _Said(status.state, now_ms)

    def state(self, partition: int, now_ms: int) -> str:
        """Whether the partition's counting is live now, by what was heard."""
        fresh = [s for s in self._said.get(partition, {}).values() if now_ms - s.heard_ms < self.stale_ms]
        if any(s.state == LIVE for s in fresh):
            return LIVE
        if fresh:
            return CATCHING_UP
        opened = self._opened_ms.get(partition)
        return LIVE if opened is not None and now_ms - opened < self.stale_ms else CATCHING_UP

    def is_live(self, article: str, now_ms: int) -> bool:
        """Is counting for ``article`` live? (Whether or not it has a room here.)"""
        return self.state(shard_of(article, self.partitions), now_ms) == LIVE

    # -- what readers are told ---------------------------------------------------------------

    def changes(self, now_ms: int) -> list[tuple[str, str]]:
        """``(article, state)`` for every room here whose partition's state differs from what
        the room was last told; from now on it counts as told."""
        told = []
        for partition, articles in self._articles.items():
            state = self.state(partition, now_ms)
            if state == self._told[partition]:
                continue
            self._told[partition] = state
            if state == CATCHING_UP:
                self._since_ms[partition] = now_ms
            else:
                self._since_ms.pop(partition, None)
            told += [(article, state) for article in sorted(articles)]
        return told

    def told(self, article: str) -> str:
        """What the room of ``article`` was last told (``live`` for a room not open here)."""
        partition = self._partition_of.get(article)
        return LIVE if partition is None else self._told[partition]

    def lapses(self, now_ms: int) -> list[Lapse]:
        """The partitions whose rooms were last told "catching up", for /readyz."""
        found = []
        for partition in sorted(p for p, told in self._told.items() if told == CATCHING_UP):
            said = self._said.get(partition, {}).values()
            speaking = any(now_ms - s.heard_ms < self.stale_ms for s in said)
            found.append(Lapse(partition, self._since_ms[partition], SAID_CATCHING_UP if speaking else SILENT,
                               len(self._articles[partition])))
        return found
