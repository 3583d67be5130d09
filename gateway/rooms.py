"""Rooms: the readers of each article on this gateway, and the fan-out of totals to them.

A total is encoded and framed once per article and the same bytes are written to every reader's
socket: no per-reader encoding. A reader whose socket is not draining keeps only the newest
frame per article (conflation), so a slow reader costs a bounded amount of memory and never
delays the others.

A large room is served in turn: its readers stand in a fixed order with a cursor that goes round
(``Rotation``). A newer total replaces the frame at once and the pass carries on from the cursor
with it, wrapping round to the readers who got an older one; nobody is written the same total
twice and nobody waits more than one trip round the room. So when a room is too large for one
pass per window, each reader's updates slow down to one per pass, evenly for every reader, and
speed up again when passes get shorter (``Cadence`` measures this, for /metrics).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from websockets.frames import Frame, Opcode

from core.messages import CountChanged, is_newer

log = logging.getLogger(__name__)


# Held frames are keyed by article for totals and by article, this and a kind for a room's other
# frames; no article id contains it (core.validation), so a leave finds them all.
ROOM_FRAME_SEPARATOR = "\n"

PING_FRAME = Frame(Opcode.PING, b"").serialize(mask=False)

# Below this a reader of the room notices the count lagging (a person reads ~250 ms as "not
# instant"); a room that falls below it needs more gateway processes, and says so in the log.
SLOWEST_UPDATES_PER_SECOND = 4.0
# A room whose passes take more than this share of the floor's interval (200 ms at 4 a second)
# is near its floor: the gateway takes no new connections while it has one (/readyz), so the
# load balancer sends new readers to gateways with room, and the readers here keep their floor.
FLOOR_HEADROOM = 0.8
# A pass measured longer ago than this says nothing about now (a room quiet since then).
FLOOR_EVIDENCE_S = 2.0


def text_frame(payload: bytes) -> bytes:
    """A complete unmasked websocket text frame, as a server sends it (RFC 6455 §5.2)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


def _send(transport: Transport, frame: bytes) -> bool:
    """Write one frame; False for a socket that is closing, which is never an error here.

    asyncio refuses writes after ``write_eof()`` (a close handshake in progress) while
    ``is_closing()`` is still False; that socket's handler is about to drop the reader.
    """
    try:
        transport.write(frame)
    except RuntimeError:
        return False
    return True


M = TypeVar("M", bound=Hashable)


class Rotation(Generic[M]):
    """The members of one room in service order, a cursor that goes round, and who has what.

    Pure bookkeeping, no I/O and no clock. Each member carries the generation of the newest
    frame it was given. ``advance()`` starts a newer generation; ``take_due(n)`` hands out, from
    the cursor on and wrapping round, up to ``n`` members that have not been given it yet and
    marks them given. So, after any sequence of ``advance`` calls:

    - a member is handed out at most once per generation, and generations only grow, so a
      member's frames never go backwards;
    - every member is handed the newest generation before the cursor passes it a second time,
      whatever joined or left meanwhile;
    - ``due == 0`` exactly when every member has the newest generation.

    The cursor walks a snapshot of the service order (``order``) with each member's generation
    beside it (``stamps``; -1 where a member left), so the usual step, a run of members who are
    all due, is a few list slices done in C rather than a dictionary update per member. Members
    who join wait in ``newcomers`` and go to the end of the order when the cursor next wraps.
    """

    __slots__ = ("where", "order", "stamps", "newcomers", "cursor", "generation", "due", "visits")

    LEFT = -1

    def __init__(self) -> None:
        self.where: dict[M, int] = {}  # every member -> its index in ``order`` (-1: a newcomer)
        self.order: list[M | None] = []  # this trip's service order (None where a member left)
        self.stamps: list[int] = []  # the generation each of ``order`` was given (LEFT: gone)
        self.newcomers: dict[M, int] = {}  # joined since the snapshot -> the generation it was given
        self.cursor = 0
        self.generation = 0
        self.due = 0  # members whose generation is older than the newest
        self.visits = 0  # members the cursor has passed, ever: how far it has gone round

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, member: object) -> bool:
        return member in self.where

    def __iter__(self) -> Iterator[M]:
        return iter(self.where)

    def add(self, member: M, *, given_newest: bool) -> None:
        """A member joins; ``given_newest``: it was just given the newest generation directly."""
        if member in self.where:
            return
        has = self.generation if given_newest else 0
        self.where[member] = -1
        self.newcomers[member] = has
        if has != self.generation:
            self.due += 1

    def remove(self, member: M) -> None:
        index = self.where.pop(member, None)
        if index is None:
            return
        if index < 0:
            has = self.newcomers.pop(member)
        else:
            has = self.stamps[index]
            self.stamps[index] = self.LEFT
            self.order[index] = None  # do not keep a closed connection alive until the next trip
        if has != self.generation:
            self.due -= 1

    def advance(self) -> int:
        """A newer frame: every member is due it, starting from wherever the cursor is."""
        self.generation += 1
        self.due = len(self.where)
        return self.generation

    def take_due(self, limit: int) -> list[M]:
        """Up to ``limit`` members that are due, from the cursor on, now marked given.

        Passing over members that already have the newest frame is cheap but not free, so one
        call looks at no more than ``8 * limit`` of them.
        """
        taken: list[M] = []
        newest = self.generation
        order, stamps, cursor, due = self.order, self.stamps, self.cursor, self.due
        looked, most = 0, 8 * limit
        while due and len(taken) < limit and looked < most:
            if cursor >= len(order):
                if self.newcomers or len(order) != len(self.where):
                    order, stamps = self._next_trip()
                cursor = 0
            end = min(cursor + limit - len(taken), len(order))
            run = stamps[cursor:end]
            if min(run) >= 0 and max(run) < newest:  # everyone here is present and due
                taken += order[cursor:end]  # type: ignore[arg-type]
                stamps[cursor:end] = [newest] * len(run)
                due -= len(run)
            else:
                for index in range(cursor, end):
                    has = stamps[index]
                    if has < 0 or has == newest:
                        continue  # left, or already has it
                    stamps[index] = newest
                    due -= 1
                    taken.append(order[index])  # type: ignore[arg-type]
            looked += end - cursor
            cursor = end
        self.cursor, self.due = cursor, due
        self.visits += looked
        return taken

    def _next_trip(self) -> tuple[list[M | None], list[int]]:
        """The next trip's order: leavers gone, newcomers at the end, everyone's generation kept."""
        old_stamps, newcomers = self.stamps, self.newcomers
        order: list[M | None] = list(self.where)
        stamps = [old_stamps[i] if i >= 0 else newcomers[m] for m, i in self.where.items()]
        self.where = {m: i for i, m in enumerate(order)}  # type: ignore[misc]
        self.order, self.stamps, self.newcomers = order, stamps, {}
        return order, stamps


class Cadence:
    """How often each reader of a room gets a new total: the slower of the totals and the passes.

    Totals arrive once per window (or less often on a quiet article); a pass is one trip of the
    cursor round the room. When a pass takes longer than a window, a reader gets one total per
    pass: the cadence follows the audience. Both intervals are smoothed over the last few.
    """

    __slots__ = ("arrival_s", "pass_s", "last_arrival", "last_pass", "passes")

    SMOOTHING = 0.25  # weight of the newest interval

    def __init__(self) -> None:
        self.arrival_s: float | None = None
        self.pass_s: float | None = None
        self.last_arrival: float | None = None
        self.last_pass: float | None = None
        self.passes = 0

    def total_arrived(self, now: float) -> None:
        if self.last_arrival is not None:
            self.arrival_s = self._smooth(self.arrival_s, now - self.last_arrival)
        self.last_arrival = now

    def pass_finished(self, seconds: float, now: float) -> None:
        self.pass_s = self._smooth(self.pass_s, seconds)
        self.last_pass = now
        self.passes += 1

    @property
    def updates_per_second(self) -> float | None:
        longest = max(self.arrival_s or 0.0, self.pass_s or 0.0)
        return 1.0 / longest if longest > 0 else None

    def _smooth(self, held: float | None, sample: float) -> float:
        return sample if held is None else held + self.SMOOTHING * (sample - held)


class Reader:
    """One websocket connection as the fan-out sees it."""

    __slots__ = ("transport", "articles", "pending", "__weakref__")

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        # A tuple, not a set: a reader joins one article or a few, and 100,000 idle readers
        # per machine make every byte here count.
        self.articles: tuple[str, ...] = ()
        self.pending: dict[str, bytes] | None = None


class Room:
    __slots__ = ("article", "readers", "latest", "frame", "cadence", "serving", "pass_started", "pass_visits",
                 "warned_slow")

    def __init__(self, article: str) -> None:
        self.article = article
        self.readers: Rotation[Reader] = Rotation()
        self.latest: CountChanged | None = None
        self.frame: bytes = b""
        self.cadence = Cadence()
        self.serving: asyncio.Task[None] | None = None  # the pass in progress, for a large room
        self.pass_started = 0.0
        self.pass_visits = 0  # the cursor's ``visits`` when this pass started
        self.warned_slow = False


class RoomRegistry:
    """Article id -> room, with fair chunked passes and conflated delivery to readers that fall behind."""

    def __init__(
        self,
        *,
        write_buffer_high: int = 64 * 1024,
        chunk: int = 1000,
        yields: int = 1,
        encode: Callable[[CountChanged], bytes] | None = None,
        clock: Callable[[], float] = time.monotonic,
        floor: float = SLOWEST_UPDATES_PER_SECOND,
        on_pass: Callable[[Room, float], None] | None = None,
        on_open: Callable[[str], None] | None = None,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.rooms: dict[str, Room] = {}
        # Told when an article gets its first reader here and when it loses its last: the feed
        # reads only the partitions of open rooms (gateway.feed).
        self._on_open = on_open
        self._on_close = on_close
        self.write_buffer_high = write_buffer_high
        self.chunk = chunk
        self.yields = yields  # loop turns between a pass's chunks (GatewayConfig.fanout_yields)
        self._encode = encode or (lambda update: update.to_json())
        self._clock = clock
        self.floor = floor
        self._on_pass = on_pass
        self._backlogged: set[Reader] = set()
        self.frames_written = 0
        self.frames_conflated = 0

    def join(self, reader: Reader, article: str) -> Room:
        room = self.rooms.get(article)
        if room is None:
            room = self.rooms[article] = Room(article)
            if self._on_open is not None:
                self._on_open(article)
        if article not in reader.articles:
            reader.articles += (article,)
        if reader not in room.readers and room.latest is not None:
            self._deliver(reader, article, room.frame)
            room.readers.add(reader, given_newest=True)
        else:
            room.readers.add(reader, given_newest=False)
        return room

    def leave(self, reader: Reader, article: str) -> None:
        reader.articles = tuple(a for a in reader.articles if a != article)
        if reader.pending:
            reader.pending.pop(article, None)
            for key in [k for k in reader.pending if k.startswith(article + ROOM_FRAME_SEPARATOR)]:
                del reader.pending[key]  # the room's other frames (presence) go with it
        room = self.rooms.get(article)
        if room is None:
            return
        room.readers.remove(reader)
        if not len(room.readers):
            del self.rooms[article]
            if self._on_close is not None:
                self._on_close(article)

    def drop(self, reader: Reader) -> None:
        """Forget a reader whose connection has closed."""
        for article in list(reader.articles):
            self.leave(reader, article)
        self._backlogged.discard(reader)

    def large_rooms(self) -> list[Room]:
        """Rooms served in more than one chunk: the ones whose cadence is worth watching."""
        return [room for room in self.rooms.values() if len(room.readers) > self.chunk]

    def rooms_near_floor(self) -> list[Room]:
        """Large rooms whose recent passes took over ``FLOOR_HEADROOM`` of the floor's interval:
        a few more readers each and they would get fewer than ``floor`` updates a second."""
        now = self._clock()
        limit = FLOOR_HEADROOM / self.floor
        return [room for room in self.large_rooms()
                if room.cadence.pass_s is not None and room.cadence.pass_s > limit
                and room.cadence.last_pass is not None and now - room.cadence.last_pass <= FLOOR_EVIDENCE_S]

    async def publish(self, update: CountChanged) -> int:
        """Make ``update`` the newest total of its article's room if it is newer than what it has.

        Returns how many readers the room holds (each gets it, written or queued). Updates for
        articles without a reader here are dropped: this gateway has nobody to tell. A room of up
        to ``chunk`` readers is written at once. A larger one is written one chunk now and the
        rest by a pass that gives the event loop ``yields`` turns between chunks, so one hot
        article does not hold up acks, joins and other rooms; a newer total arriving meanwhile
        becomes the frame for the rest of that pass and for those it already passed (see
        ``Rotation``).
        """
        room = self.rooms.get(update.article)
        if room is None:
            return 0
        if room.latest is not None and not is_newer(update.position(), room.latest.position()):
            return 0
        room.latest = update
        room.frame = text_frame(self._encode(update))
        now = self._clock()
        room.cadence.total_arrived(now)
        was_idle = room.readers.due == 0
        room.readers.advance()
        if was_idle:
            room.pass_started, room.pass_visits = now, room.readers.visits
        if room.serving is None:
            self._serve_chunk(room)
            if room.readers.due:
                room.serving = asyncio.create_task(self._serve_rest(room), name=f"room-pass-{room.article}")
        return len(room.readers)

    async def wait_passes(self) -> None:
        """Until no room has a pass in progress (tests, and a clean stop)."""
        while tasks := [room.serving for room in self.rooms.values() if room.serving is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve_rest(self, room: Room) -> None:
        try:
            # The task's first turn comes after the chunk publish() wrote: a yield in between.
            while room.readers.due:
                self._serve_chunk(room)
                if room.readers.due:
                    await self.let_loop_run()
        except Exception:
            log.exception("fan-out pass of %s failed; the next total starts a new one", room.article)
        finally:
            room.serving = None

    async def let_loop_run(self) -> None:
        """Between two chunks of bulk writes: ``yields`` turns of the event loop for the rest."""
        # A turn runs only what was ready when it began, so a chain of awaits woken by I/O (a
        # Kafka answer, an fsync's result) moves one step per turn.
        for _ in range(self.yields):
            await asyncio.sleep(0)

    def _serve_chunk(self, room: Room) -> None:
        due = room.readers.take_due(self.chunk)
        if due:
            self._write_all(due, room.article, room.frame)
        rotation = room.readers
        # A pass ends when everyone has the newest total, or, while newer totals keep coming,
        # after each trip of the cursor round the room.
        if rotation.due == 0 or rotation.visits - room.pass_visits >= len(rotation):
            now = self._clock()
            if len(rotation) > self.chunk:
                self._pass_finished(room, now - room.pass_started, now)
            room.pass_started, room.pass_visits = now, rotation.visits

    def _pass_finished(self, room: Room, seconds: float, now: float) -> None:
        room.cadence.pass_finished(seconds, now)
        if self._on_pass is not None:
            self._on_pass(room, seconds)
        rate = room.cadence.updates_per_second
        slow = room.cadence.pass_s is not None and room.cadence.pass_s > 1.0 / self.floor
        if slow and not room.warned_slow:
            log.warning("room %s: a pass over its %d readers takes %.0f ms, so they get %.1f updates/s; "
                        "spread its readers over more gateway processes",
                        room.article, len(room.readers), room.cadence.pass_s * 1000, rate or 0.0)
        room.warned_slow = slow

    def _deliver(self, reader: Reader, article: str, frame: bytes) -> None:
        if reader.pending is None and reader.transport.get_write_buffer_size() < self.write_buffer_high:
            self.frames_written += _send(reader.transport, frame)
        else:
            self._hold(reader, article, frame)

    def _write_all(self, readers: Iterable[Reader], article: str, frame: bytes) -> None:
        high = self.write_buffer_high
        written = 0
        # The hot loop of the whole service: keep it to a size check and a write per reader.
        for reader in readers:
            transport = reader.transport
            if reader.pending is None and transport.get_write_buffer_size() < high:
                written += _send(transport, frame)
            else:
                self._hold(reader, article, frame)
        self.frames_written += written

    def _hold(self, reader: Reader, article: str, frame: bytes) -> None:
        if reader.transport.is_closing():
            return
        if reader.pending is None:
            reader.pending = {}
            self._backlogged.add(reader)
        elif article in reader.pending:
            self.frames_conflated += 1
        reader.pending[article] = frame

    def flush_backlog(self) -> int:
        """Write held frames to readers whose sockets have drained; returns how many still wait."""
        for reader in list(self._backlogged):
            if reader.transport.is_closing():
                self._backlogged.discard(reader)
                reader.pending = None
                continue
            if reader.transport.get_write_buffer_size() >= self.write_buffer_high // 2:
                continue
            pending, reader.pending = reader.pending or {}, None
            self._backlogged.discard(reader)
            for frame in pending.values():
                self.frames_written += _send(reader.transport, frame)
        return len(self._backlogged)

    async def run_backlog_flusher(self, interval_s: float = 0.02) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.flush_backlog()

    def ping_all(self, readers: Iterable[Reader]) -> None:
        """Write one shared ping frame to every reader whose socket is draining.

        One sweep for all connections instead of a keepalive task per connection: it keeps
        proxies and NATs from dropping idle readers, and a dead peer's socket fails its writes
        (with TCP keepalive as the backstop) and closes. Pongs need no tracking.
        """
        high = self.write_buffer_high
        for reader in readers:
            transport = reader.transport
            if not transport.is_closing() and transport.get_write_buffer_size() < high:
                _send(transport, PING_FRAME)

    def send_to_room(self, article: str, kind: str, frame: bytes) -> int:
        """Write ``frame`` (not a total) to every reader of ``article`` here; a reader whose socket
        is full keeps only the newest frame of each ``kind`` per room, dropped when it leaves the
        room. Returns how many readers it reached."""
        room = self.rooms.get(article)
        if room is None:
            return 0
        self._write_all(room.readers, article + ROOM_FRAME_SEPARATOR + kind, frame)
        return len(room.readers)

    def send_to_reader(self, reader: Reader, article: str, kind: str, frame: bytes) -> int:
        """Write ``frame`` of ``kind`` (not a total) to one reader of ``article``'s room, held the
        way :meth:`send_to_room` holds it. Returns 1, or 0 if the reader is not in the room."""
        if article not in reader.articles:
            return 0
        self._deliver(reader, article + ROOM_FRAME_SEPARATOR + kind, frame)
        return 1
