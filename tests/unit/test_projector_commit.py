"""The projector keeps going when the group took its partitions while a batch was written."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from core.messages import CountChanged
from projector import metrics
from projector.config import ProjectorConfig
from projector.service import Projector


class RebalancedConsumer:
    """Two batches of totals; the first batch's commit finds the group rebalanced (what a
    projector that missed its heartbeats in a broker stall saw in the chaos run)."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop_event = stop
        tp = TopicPartition("clap-counts", 0)
        self.batches = [
            {tp: [SimpleNamespace(value=CountChanged("a", 3, 3, 3, 1, 0).to_json(), key=b"a")]},
            {tp: [SimpleNamespace(value=CountChanged("a", 5, 2, 5, 1, 0).to_json(), key=b"a")]},
        ]
        self.commits = 0

    async def start(self): ...
    async def stop(self): ...
    def subscribe(self, pattern): ...
    def assignment(self): return set()

    async def getmany(self, timeout_ms, max_records):
        if not self.batches:
            self.stop_event.set()
            return {}
        return self.batches.pop(0)

    async def commit(self):
        self.commits += 1
        if self.commits == 1:
            raise CommitFailedError("the group has already rebalanced")


class Rows:
    def __init__(self) -> None:
        self.written: list[tuple[str, int]] = []

    async def write(self, rows):
        self.written += [(row.article, row.total) for row in rows]

    async def write_user_totals(self, rows): ...


async def test_a_commit_refused_after_a_rebalance_is_logged_and_the_next_batch_is_projected():
    stop = asyncio.Event()
    consumer = RebalancedConsumer(stop)
    store = Rows()
    projector = Projector(ProjectorConfig(), store)
    projector.make_consumer = lambda: consumer
    lost_before = metrics.commits_lost._value.get()
    await asyncio.wait_for(projector.run(stop=stop), 5)
    assert store.written == [("a", 3), ("a", 5)]
    assert consumer.commits == 2
    assert metrics.commits_lost._value.get() == lost_before + 1
