"""gateway.counting with fake sockets and a fake clock: rooms are told once per transition, a
joiner of a catching-up room is told with its join answer, slow readers hold one such frame."""
from __future__ import annotations

import orjson

from core.messages import CATCHING_UP, LIVE, CountChanged, CountingStatus
from core.routing import shard_of
from gateway.counting import CountingNotices
from gateway.rooms import Reader, RoomRegistry

PARTITIONS = 4


class FakeTransport:
    def __init__(self, buffered: int = 0) -> None:
        self.frames: list[bytes] = []
        self.buffered = buffered

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


def article_on(partition: int, nth: int = 0) -> str:
    return [f"art-{i}" for i in range(1_000) if shard_of(f"art-{i}", PARTITIONS) == partition][nth]


A, A2, B = article_on(1), article_on(1, 1), article_on(2)


def gateway_parts() -> tuple[RoomRegistry, CountingNotices, Clock]:
    """Rooms and notices wired the way gateway.server wires them."""
    clock = Clock()
    notices: list[CountingNotices] = []
    rooms = RoomRegistry(on_open=lambda a: notices[0].opened(a), on_close=lambda a: notices[0].closed(a))
    notices.append(CountingNotices(rooms, clock, stale_ms=5_000))
    notices[0].start(PARTITIONS)
    return rooms, notices[0], clock


def messages(reader: Reader) -> list[dict]:
    return [orjson.loads(frame[2:]) for frame in reader.transport.frames]


def counting_messages(reader: Reader) -> list[tuple[str, str]]:
    return [(m["article"], m["state"]) for m in messages(reader) if m["type"] == "counting"]


def joined(rooms: RoomRegistry, notices: CountingNotices, article: str, buffered: int = 0) -> Reader:
    reader = Reader(FakeTransport(buffered))
    rooms.join(reader, article)
    notices.joined(reader, article)
    return reader


def test_readers_are_told_catching_up_once_when_it_turns_so_and_live_once_when_it_comes_back():
    rooms, notices, clock = gateway_parts()
    a, a2, b = joined(rooms, notices, A), joined(rooms, notices, A2), joined(rooms, notices, B)
    notices.heard(CountingStatus(1, LIVE, 1))
    notices.heard(CountingStatus(2, LIVE, 1))
    clock.ms += 1_000
    notices.heard(CountingStatus(1, CATCHING_UP, 1))
    for _ in range(6):  # the worker keeps saying so, and the gateway keeps looking
        clock.ms += 500
        notices.heard(CountingStatus(1, CATCHING_UP, 1))
        notices.heard(CountingStatus(2, LIVE, 1))
        notices.tell()
    notices.heard(CountingStatus(1, LIVE, 1))
    notices.tell()
    assert counting_messages(a) == [(A, CATCHING_UP), (A, LIVE)]
    assert counting_messages(a2) == [(A2, CATCHING_UP), (A2, LIVE)]
    assert counting_messages(b) == []


def test_a_silent_processor_turns_the_rooms_catching_up_after_stale_ms_of_silence():
    rooms, notices, clock = gateway_parts()
    a = joined(rooms, notices, A)
    notices.heard(CountingStatus(1, LIVE, 1))
    clock.ms += 4_999
    notices.tell()
    assert counting_messages(a) == []
    clock.ms += 1
    notices.tell()
    assert counting_messages(a) == [(A, CATCHING_UP)]
    assert notices.readiness() == {
        "state": "catching_up", "articles": 1,
        "partitions": [{"partition": 1, "since": "2023-11-14T22:13:25.000+00:00",
                        "reason": "no word from the processor", "articles": 1}],
    }


async def test_a_reader_joining_a_catching_up_room_is_told_right_after_its_count():
    rooms, notices, clock = gateway_parts()
    first = joined(rooms, notices, A)
    notices.heard(CountingStatus(1, CATCHING_UP, 1))
    await rooms.publish(CountChanged(A, 7, 7, 3, 1, 0))  # the room's total (its store read, say)
    late = joined(rooms, notices, A)
    assert [(m["type"], m.get("total"), m.get("state")) for m in messages(late)] == [
        ("count", 7, None), ("counting", None, CATCHING_UP)]
    assert counting_messages(first) == [(A, CATCHING_UP)]  # told once, not again for the joiner
    notices.heard(CountingStatus(1, LIVE, 1))
    assert counting_messages(late) == counting_messages(first) == [(A, CATCHING_UP), (A, LIVE)]


def test_a_reader_joining_a_live_room_is_told_nothing():
    rooms, notices, clock = gateway_parts()
    joined(rooms, notices, A)
    notices.heard(CountingStatus(1, LIVE, 1))
    assert counting_messages(joined(rooms, notices, A)) == []


def test_a_slow_reader_holds_only_the_newest_counting_frame_and_the_others_get_every_one():
    rooms, notices, clock = gateway_parts()
    fast = joined(rooms, notices, A)
    slow = joined(rooms, notices, A, buffered=10**9)
    for _ in range(3):
        notices.heard(CountingStatus(1, CATCHING_UP, 1))
        notices.heard(CountingStatus(1, LIVE, 1))
    assert counting_messages(fast) == [(A, CATCHING_UP), (A, LIVE)] * 3
    assert slow.transport.frames == []
    assert [orjson.loads(frame[2:]) for frame in slow.pending.values()] == [{"type": "counting", "article": A, "state": LIVE}]
    slow.transport.buffered = 0
    rooms.flush_backlog()
    assert counting_messages(slow) == [(A, LIVE)]


def test_a_reader_leaving_the_room_loses_its_held_counting_frame():
    rooms, notices, clock = gateway_parts()
    slow = joined(rooms, notices, A, buffered=10**9)
    joined(rooms, notices, A)
    notices.heard(CountingStatus(1, CATCHING_UP, 1))
    assert slow.pending
    rooms.leave(slow, A)
    assert not slow.pending


def test_the_last_reader_leaving_forgets_the_partition_and_a_new_room_starts_live():
    rooms, notices, clock = gateway_parts()
    reader = joined(rooms, notices, A)
    notices.heard(CountingStatus(1, CATCHING_UP, 1))
    rooms.leave(reader, A)
    assert notices.readiness() == {"state": "live"}
    assert counting_messages(joined(rooms, notices, A2)) == []


def test_readiness_counts_the_articles_of_every_partition_catching_up():
    rooms, notices, clock = gateway_parts()
    for article in (A, A2, B):
        joined(rooms, notices, article)
    notices.heard(CountingStatus(1, CATCHING_UP, 2))
    notices.heard(CountingStatus(2, CATCHING_UP, 2))
    ready = notices.readiness()
    assert (ready["state"], ready["articles"]) == ("catching_up", 3)
    assert [(p["partition"], p["articles"], p["reason"]) for p in ready["partitions"]] == [
        (1, 2, "the processor is catching up with the clap log"), (2, 1, "the processor is catching up with the clap log"),
    ]
