"""Fan-out rules with fake sockets: the right rooms only, frames shared, slow readers conflated,
large rooms served in turn, and a cadence that follows the audience."""
import asyncio
import math
import random

import orjson

from core.messages import CountChanged
from gateway.rooms import PING_FRAME, Reader, RoomRegistry, Rotation


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTransport:
    """A socket as the fan-out sees it; each write may cost time on a fake clock."""

    def __init__(self, buffered: int = 0, clock: FakeClock | None = None, write_cost_s: float = 0.0) -> None:
        self.frames: list[bytes] = []
        self.received_at: list[float] = []
        self.buffered = buffered
        self.closing = False
        self.eof_written = False
        self.clock = clock
        self.write_cost_s = write_cost_s

    def write(self, data: bytes) -> None:
        if self.eof_written:  # what asyncio's socket transport does during a close handshake
            raise RuntimeError("Cannot call write() after write_eof()")
        self.frames.append(data)
        if self.clock is not None:
            self.clock.now += self.write_cost_s
            self.received_at.append(self.clock.now)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


def room_of(count: int, chunk: int = 1000, **registry_options) -> tuple[RoomRegistry, list[Reader]]:
    """A registry whose article "a" has ``count`` readers."""
    rooms = RoomRegistry(chunk=chunk, **registry_options)
    readers = [Reader(FakeTransport()) for _ in range(count)]
    for reader in readers:
        rooms.join(reader, "a")
    return rooms, readers


def total(article: str, seq: int, value: int | None = None) -> CountChanged:
    return CountChanged(article, seq if value is None else value, 1, seq, 1, 0)


def seqs(reader: Reader) -> list[int]:
    """The positions a reader was written, in the order it got them (frames are < 126 bytes)."""
    return [orjson.loads(frame[2:])["seq"] for frame in reader.transport.frames]


async def step() -> None:
    """One turn of the event loop: a pass in progress writes one more chunk."""
    await asyncio.sleep(0)


# -- which rooms, which bytes -------------------------------------------------------------------


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
    assert seqs(reader) == [5]


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
    assert seqs(fast) == list(range(1, 101))
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
    rooms = RoomRegistry(write_buffer_high=1000)
    idle, busy = Reader(FakeTransport()), Reader(FakeTransport(buffered=5000))
    rooms.ping_all([idle, busy])
    assert idle.transport.frames == [PING_FRAME] and busy.transport.frames == []


async def test_a_socket_half_closed_by_a_close_handshake_never_breaks_delivery_or_pings():
    rooms = RoomRegistry(write_buffer_high=1000, chunk=2)
    closing, fine = Reader(FakeTransport()), Reader(FakeTransport())
    closing.transport.eof_written = True  # is_closing() is still False at this point
    for reader in (closing, fine, Reader(FakeTransport())):
        rooms.join(reader, "a")
    await rooms.publish(total("a", 1))
    await rooms.wait_passes()
    rooms.ping_all([closing, fine])
    late = Reader(FakeTransport())
    late.transport.eof_written = True
    rooms.join(late, "a")
    assert len(fine.transport.frames) == 2 and closing.transport.frames == []


# -- the rotation alone (no sockets, no loop) ----------------------------------------------------


def test_the_rotation_hands_each_member_the_newest_generation_once_within_one_trip():
    rotation: Rotation[int] = Rotation()
    for member in range(10):
        rotation.add(member, given_newest=False)
    rotation.advance()
    assert rotation.take_due(4) == [0, 1, 2, 3]
    rotation.advance()  # newer, mid-trip: carry on from the cursor, then wrap round
    assert rotation.take_due(100) == [4, 5, 6, 7, 8, 9, 0, 1, 2, 3]
    assert rotation.due == 0 and rotation.take_due(100) == []


def test_the_rotation_serves_joiners_after_a_newer_generation_and_forgets_leavers():
    rotation: Rotation[str] = Rotation()
    for member in "abcd":
        rotation.add(member, given_newest=False)
    rotation.advance()
    assert rotation.take_due(2) == ["a", "b"]
    rotation.add("e", given_newest=True)  # written the newest frame directly on joining
    rotation.remove("c")
    assert rotation.take_due(100) == ["d"]
    rotation.advance()
    assert sorted(rotation.take_due(100)) == ["a", "b", "d", "e"]
    assert rotation.due == 0


def test_the_rotation_keeps_its_books_through_any_mix_of_joins_leaves_and_newer_generations():
    rng = random.Random(9)
    rotation: Rotation[int] = Rotation()
    has: dict[int, int] = {}  # the model: member -> generation it was handed
    next_member = 0
    for _ in range(3000):
        roll = rng.random()
        if roll < 0.15:
            given = rng.random() < 0.5
            rotation.add(next_member, given_newest=given)
            has[next_member] = rotation.generation if given else 0
            next_member += 1
        elif roll < 0.25 and has:
            gone = rng.choice(list(has))
            rotation.remove(gone)
            del has[gone]
        elif roll < 0.4:
            rotation.advance()
        else:
            for member in rotation.take_due(rng.randrange(1, 6)):
                assert member in has and has[member] < rotation.generation  # present, due, never twice
                has[member] = rotation.generation
        assert rotation.due == sum(1 for g in has.values() if g != rotation.generation)
        assert set(rotation) == set(has) and len(rotation) == len(has)
    while rotation.due:
        for member in rotation.take_due(7):
            has[member] = rotation.generation
    assert all(g == rotation.generation for g in has.values())


# -- large rooms: served in turn -----------------------------------------------------------------


async def test_a_large_room_is_written_in_chunks_and_everyone_gets_the_frame_once():
    rooms, readers = room_of(35, chunk=10)
    assert await rooms.publish(total("a", 1)) == 35
    assert sum(1 for r in readers if r.transport.frames) == 10  # the first chunk at once
    await rooms.wait_passes()
    assert all(seqs(r) == [1] for r in readers)


async def test_between_chunks_a_pass_lets_a_chain_of_awaits_finish_first():
    # What a Kafka answer wakes (the connection's reader, the sender, the clap's ack) moves one
    # await per loop turn: with `yields` turns between chunks a chain that long is done before
    # the next chunk, with one turn it waits a chunk per step.
    async def chain(steps: int, written: list[int], readers: list[Reader]) -> None:
        for _ in range(steps):
            await asyncio.sleep(0)
        written.append(sum(1 for r in readers if r.transport.frames))

    for yields, readers_written_when_done in ((4, 20), (1, 45)):  # 45: the whole room
        rooms, readers = room_of(45, chunk=10, yields=yields)
        await rooms.publish(total("a", 1))  # the first chunk now, the rest by the pass
        written: list[int] = []
        await asyncio.create_task(chain(3, written, readers))
        assert written == [readers_written_when_done], yields
        await rooms.wait_passes()
        assert all(seqs(r) == [1] for r in readers)


async def test_a_newer_total_mid_pass_reaches_every_reader_within_one_pass():
    rooms, readers = room_of(35, chunk=10)
    await rooms.publish(total("a", 1))
    await step()  # two chunks of the first pass are out
    got_first = [r for r in readers if r.transport.frames]
    assert len(got_first) == 20
    await rooms.publish(total("a", 2))
    steps = 0
    while any(seqs(r)[-1:] != [2] for r in readers):
        await step()
        steps += 1
    assert steps <= math.ceil(35 / 10)  # one trip round the room, not more
    for reader in readers:
        assert seqs(reader) == ([1, 2] if reader in got_first else [2])  # the rest skip the older one
    assert rooms.rooms["a"].readers.due == 0


async def test_the_tail_of_a_big_room_is_not_starved_by_totals_that_keep_coming():
    rooms, readers = room_of(50, chunk=10)
    for seq in range(1, 41):  # a newer total after every chunk: passes never finish on one total
        await rooms.publish(total("a", seq))
        await step()
    await rooms.wait_passes()
    counts = [len(r.transport.frames) for r in readers]
    assert all(seqs(r)[-1] == 40 for r in readers)
    assert max(counts) - min(counts) <= 1  # everyone served in turn, nobody skipped pass after pass
    # One chunk when the pass starts, one per turn of the loop, then the newest total round to
    # the 40 readers it had not reached yet: no write is wasted on a total a reader already has.
    assert sum(counts) == 10 + 40 * 10 + 40


async def test_order_per_reader_never_goes_back_through_joins_leaves_and_newer_totals():
    rng = random.Random(5)
    rooms, readers = room_of(40, chunk=7)
    present = list(readers)
    everyone = list(readers)
    for seq in range(1, 200):
        await rooms.publish(total("a", seq))
        for _ in range(rng.randrange(3)):
            await step()
        if rng.random() < 0.2 and len(present) > 1:
            rooms.leave(present.pop(rng.randrange(len(present))), "a")
        if rng.random() < 0.2:
            joiner = Reader(FakeTransport())
            rooms.join(joiner, "a")
            present.append(joiner)
            everyone.append(joiner)
    await rooms.wait_passes()
    for reader in everyone:
        got = seqs(reader)
        assert got == sorted(set(got))  # strictly increasing: never back, never twice
    assert all(seqs(r)[-1] == 199 for r in present)


async def test_a_reader_joining_mid_pass_gets_the_newest_once_and_the_next_one_once():
    rooms, readers = room_of(30, chunk=10)
    await rooms.publish(total("a", 1))
    joiner = Reader(FakeTransport())
    rooms.join(joiner, "a")  # the pass is under way
    assert seqs(joiner) == [1]
    await rooms.wait_passes()
    assert seqs(joiner) == [1]  # not written twice by the pass
    await rooms.publish(total("a", 2))
    await step()
    await rooms.publish(total("a", 3))  # mid-pass again: the joiner, last in line, gets only the newest
    await rooms.wait_passes()
    assert seqs(joiner) == [1, 3]
    assert all(seqs(r)[-1] == 3 for r in readers)


async def test_a_reader_leaving_during_a_chunked_pass_gets_nothing_more():
    rooms, readers = room_of(30, chunk=10)
    await rooms.publish(total("a", 1))
    not_reached = [r for r in readers if not r.transport.frames]
    assert len(not_reached) == 20
    rooms.leave(not_reached[0], "a")
    await rooms.wait_passes()
    assert not_reached[0].transport.frames == []
    assert all(seqs(r) == [1] for r in not_reached[1:])
    assert rooms.rooms["a"].readers.due == 0


async def test_a_slow_reader_in_a_big_room_stays_bounded_and_delays_nobody():
    rooms, readers = room_of(30, chunk=10, write_buffer_high=1000)
    slow = readers[3]
    slow.transport.buffered = 5000  # never drains
    for seq in range(1, 51):
        await rooms.publish(total("a", seq))
        await rooms.wait_passes()
        assert all(seqs(r)[-1] == seq for r in readers if r is not slow)  # every pass reaches the rest
    assert slow.transport.frames == [] and slow.pending is not None
    assert list(slow.pending) == ["a"]  # one held frame, the newest
    assert orjson.loads(slow.pending["a"][2:])["seq"] == 50
    assert all(seqs(r) == list(range(1, 51)) for r in readers if r is not slow)


# -- the cadence ---------------------------------------------------------------------------------


async def run_room(rooms: RoomRegistry, clock: FakeClock, *, until: float, window_s: float, seq: int) -> int:
    """Totals every ``window_s`` of fake time while the room's passes run; returns the last seq."""
    next_total = clock.now
    while clock.now < until:
        if clock.now >= next_total:
            seq += 1
            await rooms.publish(total("a", seq))
            next_total += window_s
        elif rooms.rooms["a"].serving is None:
            clock.now = next_total  # nothing to write: time passes until the next total
        await step()
    return seq


async def test_cadence_slows_when_passes_overrun_the_window_and_recovers():
    clock = FakeClock()
    passes: list[float] = []
    rooms = RoomRegistry(chunk=10, clock=clock, on_pass=lambda room, seconds: passes.append(seconds))
    readers = [Reader(FakeTransport(clock=clock, write_cost_s=0.005)) for _ in range(40)]
    for reader in readers:
        rooms.join(reader, "a")
    room = rooms.rooms["a"]

    # 40 readers x 5 ms = 200 ms a pass, totals every 100 ms: each reader gets one per pass.
    start = clock.now
    seq = await run_room(rooms, clock, until=start + 5.0, window_s=0.1, seq=0)
    assert abs(room.cadence.updates_per_second - 5.0) < 0.3
    assert abs(passes[-1] - 0.2) < 0.011
    counts = [len(r.transport.frames) for r in readers]
    assert max(counts) - min(counts) <= 1 and abs(min(counts) - 25) <= 1  # 5 s at 5 a second, all alike

    # Writes get cheap (1 ms): passes take 40 ms and every total reaches everyone again.
    for reader in readers:
        reader.transport.write_cost_s = 0.001
        reader.transport.frames.clear()
    seq = await run_room(rooms, clock, until=clock.now + 3.0, window_s=0.1, seq=seq)
    assert abs(room.cadence.updates_per_second - 10.0) < 0.3
    assert abs(passes[-1] - 0.04) < 0.002
    assert all(abs(len(r.transport.frames) - 30) <= 1 for r in readers)


async def test_no_reader_waits_more_than_one_window_plus_one_pass_for_a_newer_total():
    clock = FakeClock()
    rooms = RoomRegistry(chunk=10, clock=clock)
    readers = [Reader(FakeTransport(clock=clock, write_cost_s=0.004)) for _ in range(45)]  # 180 ms a pass
    for reader in readers:
        rooms.join(reader, "a")
    arrivals: dict[int, float] = {}
    original_publish = rooms.publish

    async def publish(update: CountChanged) -> int:
        arrivals[update.seq] = clock.now
        return await original_publish(update)

    rooms.publish = publish  # type: ignore[method-assign]
    last = await run_room(rooms, clock, until=clock.now + 4.0, window_s=0.1, seq=0)
    await rooms.wait_passes()
    worst = 0.0
    for reader in readers:
        got = list(zip(seqs(reader), reader.transport.received_at))
        for seq in range(1, last + 1):
            # When did this reader first hold ``seq`` or something newer?
            first = min(at for s, at in got if s >= seq)
            worst = max(worst, first - arrivals[seq])
    assert worst <= 0.1 + 0.18 + 1e-9


async def test_a_slow_reader_holds_one_frame_of_each_kind_per_room_and_none_after_leaving():
    rooms = RoomRegistry(write_buffer_high=1000)
    slow = Reader(FakeTransport(buffered=5000))  # its socket is not draining
    for article in ("a", "b"):
        rooms.join(slow, article)
        for n in range(1, 4):
            await rooms.publish(total(article, n))
            rooms.send_to_room(article, "presence", f"{article}-reading-{n}".encode())
    assert slow.pending is not None and sorted(slow.pending.values()) == sorted(
        [rooms.rooms["a"].frame, rooms.rooms["b"].frame, b"a-reading-3", b"b-reading-3"]
    )
    rooms.leave(slow, "a")
    assert sorted(slow.pending.values()) == sorted([rooms.rooms["b"].frame, b"b-reading-3"])


async def test_a_room_is_near_its_floor_while_its_passes_take_over_80_percent_of_the_floor_interval():
    clock = FakeClock()
    rooms = RoomRegistry(chunk=10, clock=clock, floor=4.0)
    readers = [Reader(FakeTransport(clock=clock, write_cost_s=0.0055)) for _ in range(40)]
    for reader in readers:
        rooms.join(reader, "a")
    small, _ = room_of(5)  # never large: never near a floor
    assert rooms.rooms_near_floor() == []

    # 40 readers x 5.5 ms = 220 ms a pass: over 200 ms (80 % of 250), so near the floor.
    seq = await run_room(rooms, clock, until=clock.now + 3.0, window_s=0.1, seq=0)
    assert [room.article for room in rooms.rooms_near_floor()] == ["a"]

    # 40 x 4.5 ms = 180 ms: the smoothed pass time falls under 200 ms within a few passes.
    for reader in readers:
        reader.transport.write_cost_s = 0.0045
    seq = await run_room(rooms, clock, until=clock.now + 3.0, window_s=0.1, seq=seq)
    assert rooms.rooms_near_floor() == []

    # Slow again, then quiet: a pass measured more than 2 s ago says nothing about now.
    for reader in readers:
        reader.transport.write_cost_s = 0.0055
    await run_room(rooms, clock, until=clock.now + 3.0, window_s=0.1, seq=seq)
    assert [room.article for room in rooms.rooms_near_floor()] == ["a"]
    clock.now += 2.5
    assert rooms.rooms_near_floor() == []
    assert small.rooms_near_floor() == []
