"""Fan-out rules with fake sockets: the right rooms only, frames shared, slow readers conflated."""
import asyncio

from core.messages import CountChanged
from gateway.rooms import Reader, RoomRegistry


class FakeTransport:
    def __init__(self, buffered: int = 0) -> None:
        self.frames: list[bytes] = []
        self.buffered = buffered
        self.closing = False
        self.eof_written = False

    def write(self, data: bytes) -> None:
        if self.eof_written:  # what asyncio's socket transport does during a close handshake
            raise RuntimeError("Cannot call write() after write_eof()")
        self.frames.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


def room_of(count: int, chunk: int = 1000) -> tuple[RoomRegistry, list[Reader]]:
    """A registry whose article "a" has ``count`` readers."""
    rooms = RoomRegistry(chunk=chunk)
    readers = [Reader(FakeTransport()) for _ in range(count)]
    for reader in readers:
        rooms.join(reader, "a")
    return rooms, readers


def total(article: str, seq: int, value: int | None = None) -> CountChanged:
    return CountChanged(article, seq if value is None else value, 1, seq, 1, 0)


async def test_updates_reach_only_the_readers_of_their_article():
    rooms = RoomRegistry()
    a1, a2, b = (Reader(FakeTransport()) for _ in range(3))
    rooms.join(a1, "a"), rooms.join(a2, "a"), rooms.join(b, "b")
    assert await rooms.publish(total("a", 1)) == 2
    assert len(a1.transport.frames) == len(a2.transport.frames) == 1
    assert b.transport.frames == []
    assert await rooms.publish(total("nobody-here", 1)) == 0


async def test_one_frame_object_is_shared_by_every_reader():
    rooms, readers = room_of(50)
    await rooms.publish(total("a", 1))
    assert len({id(r.transport.frames[0]) for r in readers}) == 1


async def test_older_or_repeated_positions_are_dropped():
    rooms = RoomRegistry()
    reader = Reader(FakeTransport())
    rooms.join(reader, "a")
    await rooms.publish(total("a", 5))
    await rooms.publish(total("a", 4))
    await rooms.publish(total("a", 5))
    assert len(reader.transport.frames) == 1


async def test_a_late_joiner_gets_the_latest_total_at_once():
    rooms = RoomRegistry()
    first = Reader(FakeTransport())
    rooms.join(first, "a")
    await rooms.publish(total("a", 3))
    late = Reader(FakeTransport())
    rooms.join(late, "a")
    assert late.transport.frames == first.transport.frames


async def test_a_slow_reader_keeps_only_the_newest_frame_and_the_fast_get_everything():
    rooms = RoomRegistry(write_buffer_high=1000)
    fast = Reader(FakeTransport())
    slow = Reader(FakeTransport(buffered=5000))  # its socket is not draining
    rooms.join(fast, "a"), rooms.join(slow, "a")
    for seq in range(1, 101):
        await rooms.publish(total("a", seq))
    assert len(fast.transport.frames) == 100
    assert slow.transport.frames == []
    assert slow.pending is not None and len(slow.pending) == 1  # bounded: one frame per article
    assert rooms.frames_conflated == 99
    slow.transport.buffered = 0
    assert rooms.flush_backlog() == 0
    assert slow.transport.frames == [fast.transport.frames[-1]]


def test_leaving_and_dropping_forget_the_reader():
    rooms = RoomRegistry()
    reader = Reader(FakeTransport())
    rooms.join(reader, "a"), rooms.join(reader, "b")
    rooms.leave(reader, "a")
    assert "a" not in rooms.rooms
    rooms.drop(reader)
    assert rooms.rooms == {}
    assert reader.articles == ()


def test_one_ping_sweep_reaches_every_draining_reader():
    from gateway.rooms import PING_FRAME

    rooms = RoomRegistry(write_buffer_high=1000)
    idle, busy = Reader(FakeTransport()), Reader(FakeTransport(buffered=5000))
    rooms.ping_all([idle, busy])
    assert idle.transport.frames == [PING_FRAME] and busy.transport.frames == []


async def test_a_large_room_is_written_in_chunks_and_everyone_gets_the_frame_once():
    rooms, readers = room_of(35, chunk=10)
    assert await rooms.publish(total("a", 1)) == 35
    assert all(len(r.transport.frames) == 1 for r in readers)


async def test_a_reader_leaving_during_a_chunked_pass_gets_nothing_more():
    rooms, readers = room_of(30, chunk=10)
    pass_ = asyncio.ensure_future(rooms.publish(total("a", 1)))
    await asyncio.sleep(0)  # the first chunk is written, the pass yields
    not_reached = [r for r in readers if not r.transport.frames]
    assert len(not_reached) == 20
    rooms.leave(not_reached[0], "a")
    await pass_
    assert not_reached[0].transport.frames == []
    assert all(len(r.transport.frames) == 1 for r in not_reached[1:])


async def test_a_newer_total_ends_the_older_pass_and_order_is_kept():
    rooms, readers = room_of(30, chunk=10)
    older = asyncio.ensure_future(rooms.publish(total("a", 1)))
    await asyncio.sleep(0)
    await rooms.publish(total("a", 2))
    await older
    newest = rooms.rooms["a"].frame
    for reader in readers:
        assert reader.transport.frames[-1] == newest  # nobody ends on the older total
        assert len(reader.transport.frames) <= 2


async def test_a_socket_half_closed_by_a_close_handshake_never_breaks_delivery_or_pings():
    rooms = RoomRegistry(write_buffer_high=1000, chunk=2)
    closing, fine = Reader(FakeTransport()), Reader(FakeTransport())
    closing.transport.eof_written = True  # is_closing() is still False at this point
    for reader in (closing, fine, Reader(FakeTransport())):
        rooms.join(reader, "a")
    await rooms.publish(total("a", 1))
    rooms.ping_all([closing, fine])
    late = Reader(FakeTransport())
    late.transport.eof_written = True
    rooms.join(late, "a")
    assert len(fine.transport.frames) == 2 and closing.transport.frames == []
