"""The projector keeps going when the group took its partitions while a batch was written, and
its two loops (totals, reader rows) never wait for each other."""
from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import orjson
import pytest

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from core.ledger import UserClaps
from core.messages import CountChanged
from core.processing import user_key
from projector import metrics
from projector.config import ProjectorConfig
from projector.service import Projector


class IdleConsumer:
    """A loop's consumer with nothing to read until the test stops the projector; the others
    below read what they hold."""

    def __init__(self) -> None:
        self.commits = 0

    async def start(self): ...
    async def stop(self): ...
    def subscribe(self, pattern): ...
    def assignment(self): return set()

    async def getmany(self, timeout_ms, max_records):
        await asyncio.sleep(0.001)  # a fetch always yields to the loop, as aiokafka's does
        return {}

    async def commit(self):
        self.commits += 1


class RebalancedConsumer(IdleConsumer):
    """Two batches of totals; the first batch's commit finds the group rebalanced (what a
    projector that missed its heartbeats in a broker stall saw in the chaos run)."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop_event = stop
        tp = TopicPartition("clap-counts", 0)
        self.batches = [
            {tp: [SimpleNamespace(value=CountChanged("a", 3, 3, 3, 1, 0).to_json(), key=b"a")]},
            {tp: [SimpleNamespace(value=CountChanged("a", 5, 2, 5, 1, 0).to_json(), key=b"a")]},
        ]
        super().__init__()

    async def getmany(self, timeout_ms, max_records):
        await asyncio.sleep(0)  # a fetch always yields to the loop, as aiokafka's does
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
    projector.make_consumer = lambda kind: consumer if kind == "total" else IdleConsumer()
    lost_before = metrics.commits_lost._value.get()
    await asyncio.wait_for(projector.run(stop=stop), 5)
    assert store.written == [("a", 3), ("a", 5)]
    assert consumer.commits == 2
    assert metrics.commits_lost._value.get() == lost_before + 1


class ChangelogConsumer(IdleConsumer):
    """Reader rows of one changelog record per fetch."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.topic = f"{config.processor_app_prefix}-e1-user-claps-changelog"


    async def getmany(self, timeout_ms, max_records):
        await asyncio.sleep(0.001)
        value = orjson.dumps(UserClaps(total=1, offset=0).to_dict())
        key = user_key("a", "u").encode()
        return {TopicPartition(self.topic, 0): [SimpleNamespace(key=key, value=value, topic=self.topic,
                                                                partition=0, offset=0)]}


class StuckReaderRows(Rows):
    """Cassandra answers the totals and never the reader rows (a write stuck in its queue)."""

    def __init__(self) -> None:
        super().__init__()
        self.user_writes_begun = asyncio.Event()

    async def write_user_totals(self, rows):
        self.user_writes_begun.set()
        await asyncio.Event().wait()


class TotalsAfter(RebalancedConsumer):
    """The two batches of totals, fetched only once ``gate`` is set."""

    def __init__(self, stop: asyncio.Event, gate: asyncio.Event) -> None:
        super().__init__(stop)
        self.gate = gate

    async def getmany(self, timeout_ms, max_records):
        await self.gate.wait()
        return await super().getmany(timeout_ms, max_records)


async def test_totals_are_written_and_committed_while_a_reader_rows_write_is_stuck():
    config = ProjectorConfig()
    stop = asyncio.Event()
    store = StuckReaderRows()
    totals, readers = TotalsAfter(stop, store.user_writes_begun), ChangelogConsumer(config)
    projector = Projector(config, store)
    projector.make_consumer = lambda kind: totals if kind == "total" else readers
    await asyncio.wait_for(projector.run(stop=stop), 5)
    assert store.written == [("a", 3), ("a", 5)]  # both batches of totals, past the stuck write
    assert (totals.commits, readers.commits) == (2, 0)  # the reader rows are not committed unwritten


async def test_a_failing_loop_stops_the_other_and_the_failure_propagates():
    class Broken(Rows):
        async def write_user_totals(self, rows):
            raise RuntimeError("schema error")

    config = ProjectorConfig()
    projector = Projector(config, Broken())
    projector.make_consumer = lambda kind: IdleConsumer() if kind == "total" else ChangelogConsumer(config)
    with pytest.raises(RuntimeError, match="schema error"):
        await asyncio.wait_for(projector.run(stop=asyncio.Event()), 5)


def test_each_kind_has_its_own_group_and_topics():
    config = ProjectorConfig(group_id="g", counts_topic="counts", processor_app_prefix="p")
    assert (config.group_for("total"), config.group_for("user")) == ("g", "g-readers")
    assert re.match(config.pattern_for("total"), "counts") and not re.match(config.pattern_for("total"), "p-e1-user-claps-changelog")
    assert re.match(config.pattern_for("user"), "p-e3-user-claps-changelog") and not re.match(config.pattern_for("user"), "counts")
