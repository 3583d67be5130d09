"""The state records a worker wrote last, kept decoded, so that the next batch of the same readers
does not read and decode them from the store again.

A reader who claps taps again and again: each batch of a hot article held the same users, and the
worker fetched each one's record from its store and decoded it (JSON, then ``UserClaps.from_dict``
over every clap id it remembers) once per batch: 9.7 % of a worker's py-spy samples in
`make up`'s hot article (docs/BENCHMARKS.md §4.5). A record held here is exactly what the
worker last wrote to the store and its changelog, so it is what a read would return, for as long
as this worker is the only writer of its partitions: until the next rebalance, when ``forget()``
drops them all.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class RecentRecords(Generic[T]):
    """Key -> the record last written under it, least recently written first; at most ``limit``."""

    __slots__ = ("records", "limit", "era")

    def __init__(self, limit: int) -> None:
        self.records: dict[str, T] = {}
        self.limit = limit
        self.era = 0  # forgets so far: what a batch begun in an older era wrote is not kept

    def get(self, key: str) -> T | None:
        return self.records.get(key)

    def remember(self, written: Mapping[str, T], era: int) -> None:
        """Keep ``written``, unless a rebalance came since ``era`` was read (the batch began)."""
        if era != self.era:
            return
        records = self.records
        for key, value in written.items():
            records.pop(key, None)  # to the end: the least recently written go first
            records[key] = value
        excess = len(records) - self.limit
        if excess > 0:
            for key in list(itertools.islice(records, excess)):
                del records[key]

    def forget(self) -> None:
        """Another worker may own or have written any of these now: a rebalance."""
        self.records.clear()
        self.era += 1

    def __len__(self) -> int:
        return len(self.records)
