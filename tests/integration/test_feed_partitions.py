"""A gateway reads only the fan-out partitions of its rooms, and still delivers every total (real Kafka).

The gateway runs in this process with the partitioned feed over a fresh 12-partition topic; its
readers are fake sockets joined to rooms directly (the fan-out path is the real one). Totals are
published for articles on every partition, as the processor does (keyed by article, the same
partitioner). ``records_read`` counts what the feed fetched per partition: a partition it should
not read shows up there, and so does a record read twice or skipped after an assignment change.
"""
from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from core.messages import CountChanged
from core.routing import shard_of
from embedded.file_log import FileClapLog
from embedded.sqlite_store import SqliteCounterStore
from gateway.config import GatewayConfig
from gateway.feed import PartitionedCountFeed
from gateway.kafka_adapters import KafkaCountFeed
from gateway.rooms import Reader
from tests.contract.conftest import BOOTSTRAP, create_topic

PARTITIONS = 12


class FakeTransport:
    def __init__(self) -> None:
        self.totals: list[dict] = []

    def write(self, data: bytes) -> None:
        # An unmasked server text frame: 2 header bytes, 2 more for a 126..65535-byte payload.
        header = 4 if data[1] & 0x7F == 126 else 2
        frame = orjson.loads(data[header:])
        if frame["type"] == "count":  # rooms also carry presence frames
            self.totals.append(frame)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


def articles_by_partition(per_partition: int) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    index = 0
    while any(len(a) < per_partition for a in found.values()):
        article = f"feed-art-{index}"
        index += 1
        if len(found[shard_of(article, PARTITIONS)]) < per_partition:
            found[shard_of(article, PARTITIONS)].append(article)
    return found


async def wait_until(predicate, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


@pytest.fixture
async def gateway_and_publisher(real_services, tmp_path):
    from gateway.server import Gateway

    topic = f"it-feed-{uuid.uuid4().hex[:8]}"
    await create_topic(topic, partitions=PARTITIONS)
    feed = PartitionedCountFeed(BOOTSTRAP, f"{topic}-counts")
    store = SqliteCounterStore(tmp_path / "counts.sqlite3")
    gateway = Gateway(GatewayConfig(port=0, secret=b"s"), FileClapLog(tmp_path / "claps.log"), store, feed)
    await gateway.start()
    publisher = KafkaCountFeed(BOOTSTRAP, f"{topic}-counts")
    try:
        yield gateway, feed, publisher
    finally:
        await publisher.close()
        await gateway.stop()
        await feed.close()
        await store.close()


async def join(gateway, feed: PartitionedCountFeed, article: str) -> FakeTransport:
    transport = FakeTransport()
    gateway.rooms.join(Reader(transport), article)
    await feed.followed(article)
    return transport


def totals(transport: FakeTransport, article: str) -> list[tuple[int, int]]:
    return [(t["seq"], t["total"]) for t in transport.totals if t["article"] == article]


async def test_rooms_on_two_partitions_read_only_those_two_and_get_every_total(gateway_and_publisher):
    gateway, feed, publisher = gateway_and_publisher
    by_partition = articles_by_partition(2)
    p1, p2 = 3, 8
    watched = by_partition[p1] + by_partition[p2]
    readers = {article: await join(gateway, feed, article) for article in watched}
    assert feed.following == {p1, p2}

    rounds = 30
    published = {p: 0 for p in range(PARTITIONS)}
    for seq in range(1, rounds + 1):
        batch = [CountChanged(a, seq * 10, 10, seq, 1, 0) for articles in by_partition.values() for a in articles]
        await publisher.publish(batch)
        for articles in by_partition.values():
            for a in articles:
                published[shard_of(a, PARTITIONS)] += 1
        await asyncio.sleep(0.01)

    await wait_until(lambda: all(totals(t, a)[-1:] == [(rounds, rounds * 10)] for a, t in readers.items()))
    await asyncio.sleep(0.5)  # anything else the feed would read arrives by now
    # Only the two partitions were read, and every record in them exactly once.
    assert feed.records_read == {p1: published[p1], p2: published[p2]}
    for article, transport in readers.items():
        seen = totals(transport, article)
        assert [s for s, _ in seen] == sorted({s for s, _ in seen}), article  # increasing, no repeats
        assert all(total == seq * 10 for seq, total in seen)
        assert {t["article"] for t in transport.totals} == {article}  # nothing from another room


async def test_a_partition_is_dropped_with_its_last_room_and_picked_up_again_at_its_end(gateway_and_publisher):
    gateway, feed, publisher = gateway_and_publisher
    by_partition = articles_by_partition(1)
    steady, leaving = by_partition[1][0], by_partition[5][0]
    steady_reader = await join(gateway, feed, steady)
    leaving_transport = FakeTransport()
    reader = Reader(leaving_transport)
    gateway.rooms.join(reader, leaving)
    await feed.followed(leaving)
    assert feed.following == {1, 5}

    async def publish(article: str, seq: int) -> None:
        await publisher.publish([CountChanged(article, seq, 1, seq, 1, 0)])

    # While the other room closes, opens again and closes again, the steady partition keeps its
    # place: every one of its totals is read once, across three assignment changes.
    for seq in range(1, 11):
        await publish(steady, seq)
        await publish(leaving, seq)
    await wait_until(lambda: totals(steady_reader, steady)[-1:] == [(10, 10)] == totals(leaving_transport, leaving)[-1:])
    gateway.rooms.drop(reader)
    assert feed.following == {1}
    for seq in range(11, 21):
        await publish(steady, seq)
        await publish(leaving, seq)  # nobody here reads partition 5 now
    await wait_until(lambda: totals(steady_reader, steady)[-1:] == [(20, 20)])
    back = await join(gateway, feed, leaving)  # starts at partition 5's end: seqs 11-20 are not read
    assert feed.following == {1, 5}
    for seq in range(21, 31):
        await publish(steady, seq)
        await publish(leaving, seq)
    await wait_until(lambda: totals(steady_reader, steady)[-1:] == [(30, 30)] and totals(back, leaving)[-1:] == [(30, 30)])
    await asyncio.sleep(0.5)
    assert feed.records_read == {1: 30, 5: 10 + 10}
    # The room that came back got its first total from the store (none: zero) and then live ones.
    assert [s for s, _ in totals(back, leaving) if s] == sorted({s for s, _ in totals(back, leaving) if s})
    assert min(s for s, _ in totals(back, leaving) if s) >= 21
