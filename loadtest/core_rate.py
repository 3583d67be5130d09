"""CPU per clap event of the processor's pure core, in one process: no Kafka, no Faust.

    python -m loadtest.core_rate [--articles 100] [--users 50] [--claps-per-user 50] [--batch 10000] [--rounds 5]

The backlog of `loadtest.processor_rate` (every user taps on every article, round after round), as
a worker meets it: each record decoded from its JSON (``ClapRecorded.from_json``), each batch
applied by ``ClapCounter.step`` to plain dicts, and every record the batch changed encoded as the
worker writes it back (``to_dict``, then JSON). Each round counts the whole backlog from empty
state and prints the process's CPU microseconds per event; quote the median. The worker's fetch,
its writes to Kafka and Faust's consumer are left out (`loadtest.processor_rate` has them all), so
this is the part of a worker's time that the core's code decides, measured without the noise of
four other servers.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from typing import Any

import orjson

from core.ledger import MAX_CLAPS_PER_USER
from core.messages import ClapRecorded
from core.partitioning import PartitionCache
from core.processing import ClapCounter, LogEvent

PARTITIONS = 12


def backlog(articles: int, users: int, claps_per_user: int) -> Iterator[ClapRecorded]:
    """Every user claps on every article: once with a count of 1 to 5, or ``claps_per_user``
    times with a count of 1, round after round, as readers who tap again and again do."""
    for round_ in range(claps_per_user):
        for user in range(users):
            for index in range(articles):
                count = 1 + (user + index) % 5 if claps_per_user == 1 else 1
                clap_id = f"{user}-{index}" if claps_per_user == 1 else f"{user}-{index}-{round_}"
                yield ClapRecorded(f"art{index}", f"u{user}", count, clap_id, 0)


def expected_totals(claps: list[ClapRecorded]) -> dict[str, int]:
    """What each article's total must be, the cap applied per user (counts are at most 5)."""
    given: dict[tuple[str, str], int] = {}
    for clap in claps:
        key = (clap.article, clap.user)
        given[key] = min(MAX_CLAPS_PER_USER, given.get(key, 0) + clap.count)
    totals: dict[str, int] = {}
    for (article, _), claps_given in given.items():
        totals[article] = totals.get(article, 0) + claps_given
    return totals


class ChangedKeys(dict):
    """A state table that remembers which keys a batch wrote, as the worker's tables do."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: set[str] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        self.changed.add(key)
        super().__setitem__(key, value)

    def encode_changed(self) -> int:
        written = 0
        for key in self.changed:
            written += len(orjson.dumps(self[key].to_dict()))
        self.changed.clear()
        return written


def log_records(claps: list[ClapRecorded]) -> list[tuple[int, int, bytes]]:
    """``(partition, offset, record)`` of each clap, as the clap log keyed by article holds them."""
    partition_of = PartitionCache(PARTITIONS)
    next_offset = [0] * PARTITIONS
    records = []
    for clap in claps:
        partition = partition_of(clap.article.encode())
        records.append((partition, next_offset[partition], clap.to_json()))
        next_offset[partition] += 1
    return records


def count_once(records: list[tuple[int, int, bytes]], batch: int) -> tuple[float, dict[str, int]]:
    """CPU seconds to count every record from empty state, and the totals reached."""
    users, tallies = ChangedKeys(), ChangedKeys()
    counter = ClapCounter(users, tallies, epoch=1, offsets_without_holes=True)
    for partition in range(PARTITIONS):
        counter.assign(partition, 0, 0)
    started = time.process_time()
    for start in range(0, len(records), batch):
        events = [LogEvent(p, offset, ClapRecorded.from_json(raw)) for p, offset, raw in records[start:start + batch]]
        counter.step(events)
        users.encode_changed()
        tallies.encode_changed()
    spent = time.process_time() - started
    return spent, {article: tally.total for article, tally in tallies.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=100)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--claps-per-user", type=int, default=50)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    claps = list(backlog(args.articles, args.users, args.claps_per_user))
    records, expected = log_records(claps), expected_totals(claps)
    per_event = []
    for round_ in range(args.rounds):
        spent, totals = count_once(records, args.batch)
        if totals != expected:
            raise SystemExit(f"round {round_ + 1}: totals differ from the plain recount")
        per_event.append(spent / len(records) * 1e6)
        print(f"round {round_ + 1}: {per_event[-1]:.2f} µs CPU per event ({len(records):,} events, exact)", flush=True)
    print(f"median: {statistics.median(per_event):.2f} µs CPU per event")


if __name__ == "__main__":
    main()
