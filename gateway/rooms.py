"""Rooms: the readers of each article on this gateway, and the fan-out of totals to them.

A total is encoded and framed once per article and the same bytes are written to every reader's
socket: no per-reader encoding. A reader whose socket is not draining keeps only the newest
frame per article (conflation), so a slow reader costs a bounded amount of memory and never
delays the others.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from websockets.frames import Frame, Opcode

from core.messages import CountChanged, is_newer

log = logging.getLogger(__name__)


PING_FRAME = Frame(Opcode.PING, b"").serialize(mask=False)


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
    __slots__ = ("readers", "latest", "frame")

    def __init__(self) -> None:
        self.readers: set[Reader] = set()
        self.latest: CountChanged | None = None
        self.frame: bytes = b""


class RoomRegistry:
    """Article id -> room, with conflated delivery to readers that fall behind."""

    def __init__(
        self,
        *,
        write_buffer_high: int = 64 * 1024,
        chunk: int = 1000,
        encode: Callable[[CountChanged], bytes] | None = None,
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
        self._encode = encode or (lambda update: update.to_json())
        self._backlogged: set[Reader] = set()
        self.frames_written = 0
        self.frames_conflated = 0

    def join(self, reader: Reader, article: str) -> Room:
        room = self.rooms.get(article)
        if room is None:
            room = self.rooms[article] = Room()
            if self._on_open is not None:
                self._on_open(article)
        room.readers.add(reader)
        if article not in reader.articles:
            reader.articles += (article,)
        if room.latest is not None:
            self._write_all((reader,), article, room.frame)
        return room

    def leave(self, reader: Reader, article: str) -> None:
        reader.articles = tuple(a for a in reader.articles if a != article)
        if reader.pending:
            reader.pending.pop(article, None)
        room = self.rooms.get(article)
        if room is None:
            return
        room.readers.discard(reader)
        if not room.readers:
            del self.rooms[article]
            if self._on_close is not None:
                self._on_close(article)

    def drop(self, reader: Reader) -> None:
        """Forget a reader whose connection has closed."""
        for article in list(reader.articles):
            self.leave(reader, article)
        self._backlogged.discard(reader)

    async def publish(self, update: CountChanged) -> int:
        """Send ``update`` to the readers of its article if it is newer than what they have.

        Returns how many readers it reached (written or queued). Updates for articles without a
        reader here are dropped: this gateway has nobody to tell. A large room is written in
        chunks with a yield to the event loop between them, so one hot article does not hold up
        acks, joins and other rooms for the whole pass; a newer total arriving meanwhile ends
        this pass (its own pass reaches everyone), so nobody receives totals out of order.
        """
        room = self.rooms.get(update.article)
        if room is None:
            return 0
        if room.latest is not None and not is_newer(update.position(), room.latest.position()):
            return 0
        room.latest = update
        room.frame = frame = text_frame(self._encode(update))
        if len(room.readers) <= self.chunk:
            self._write_all(room.readers, update.article, frame)
            return len(room.readers)
        readers = list(room.readers)  # the room may change while this pass yields
        for start in range(0, len(readers), self.chunk):
            if start:
                await asyncio.sleep(0)
                if room.frame is not frame:
                    break
            self._write_all(readers[start : start + self.chunk], update.article, frame, check_membership=True)
        return len(readers)

    def _write_all(self, readers: Iterable[Reader], article: str, frame: bytes, check_membership: bool = False) -> None:
        high = self.write_buffer_high
        written = 0
        # The hot loop of the whole service: keep it to a size check and a write per reader.
        for reader in readers:
            if check_membership and article not in reader.articles:
                continue  # left the room (or closed) while the pass yielded
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

    def send_to_room(self, article: str, key: str, frame: bytes) -> int:
        """Write ``frame`` (not a total) to every reader of ``article`` here; a reader whose socket
        is full keeps only the newest frame per ``key``. Returns how many readers it reached."""
        room = self.rooms.get(article)
        if room is None:
            return 0
        self._write_all(room.readers, key, frame)
        return len(room.readers)
