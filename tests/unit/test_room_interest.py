"""Rooms tell the feed when an article gets its first reader here and loses its last."""
from core.routing import PartitionInterest, shard_of
from gateway.rooms import Reader, RoomRegistry


class Sink:
    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


def test_open_on_the_first_reader_close_after_the_last():
    events: list[tuple[str, str]] = []
    rooms = RoomRegistry(on_open=lambda a: events.append(("open", a)), on_close=lambda a: events.append(("close", a)))
    first, second = Reader(Sink()), Reader(Sink())
    rooms.join(first, "a")
    rooms.join(second, "a")
    rooms.join(first, "b")
    rooms.join(first, "a")  # again: nothing new
    assert events == [("open", "a"), ("open", "b")]
    rooms.leave(first, "a")
    assert events[2:] == []
    rooms.drop(second)  # the last reader of a
    rooms.drop(first)  # the last reader of b
    assert events[2:] == [("close", "a"), ("close", "b")]
    assert rooms.rooms == {}


def test_the_partitions_needed_follow_the_rooms():
    interest = PartitionInterest(12)
    needed: set[int] = set()

    def opened(article: str) -> None:
        if (p := interest.open(article)) is not None:
            needed.add(p)

    def closed(article: str) -> None:
        if (p := interest.close(article)) is not None:
            needed.discard(p)

    rooms = RoomRegistry(on_open=opened, on_close=closed)
    readers = [Reader(Sink()) for _ in range(50)]
    for i, reader in enumerate(readers):
        rooms.join(reader, f"art{i % 7}")
    assert needed == {shard_of(f"art{i}", 12) for i in range(7)} == interest.needed
    for reader in readers[:25]:
        rooms.drop(reader)
    assert needed == {shard_of(a, 12) for a in rooms.rooms} == interest.needed
    for reader in readers[25:]:
        rooms.drop(reader)
    assert needed == set() == interest.needed
