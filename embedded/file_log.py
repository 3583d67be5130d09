"""The embedded clap log: one append-only file of JSON lines; a line's number is its offset.

What it promises, and how:
- ``append`` returns an event's offset only once its line is written in full and fsynced.
  Appends that arrive together share one write and one fsync (group commit): while one batch is
  with the disk thread, the next one gathers, so durability does not cost one disk flush per clap.
- A write or fsync that fails (a full disk, an I/O error) fails its whole batch: the file is cut
  back to the durable end and every append of the batch raises, so nothing of it is acked and
  the next batch starts on a clean line.
- The durable end (bytes and offsets) moves only after an fsync, and readers read up to it and
  no further: no reader applies a line that a power cut could still take away, so no applied
  offset can later be handed to a different event.
- A line that does not decode is skipped with a warning naming its offset and byte position; it
  keeps its offset, so every other line keeps its own. A reader never stops on one.
- On open, bytes after the last complete line (a write torn by a crash, never acked) are copied to
  a side file next to the log and cut off, so new appends neither merge with them nor renumber
  anything acked.
- A follower that has caught up (the processing loop, as a rule) is handed the events of each new
  durable batch as they were appended, not read back and decoded from the file: the same events
  at the same offsets, since ``append`` refuses any event that would not read back equal to itself
  (``ClapRecorded.check``). The last ``RECENT_EVENTS`` or so are kept for this; a follower further
  behind reads the file.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import BinaryIO, NamedTuple

from core.messages import ClapRecorded

log = logging.getLogger("embedded.file_log")

# Read size; a clap event is a few hundred bytes, so a line longer than this is corrupt.
READ_CHUNK = 1 << 20
# Durable events kept in memory for followers that have caught up (a few seconds of claps).
RECENT_EVENTS = 10_000


class DurableBatch(NamedTuple):
    """The events that one write and fsync made durable, and where they are in the file."""

    start: int  # byte position of the first line
    end: int  # byte position after the last line
    first_offset: int
    events: list[ClapRecorded]


class _DiskThread:
    """One thread that runs a log's blocking writes and fsyncs, a batch at a time, in order.

    ``asyncio.to_thread`` goes through a thread pool, a wrapped concurrent future and a copied
    context for every call, and its caller resumes a loop turn after the result arrives: at a
    thousand claps a second a batch holds a few claps, so that cost came back every few claps.
    Here a call is a queue put one way and one loop callback the other.
    """

    def __init__(self, name: str) -> None:
        self._requests: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., object], args: tuple, then: Callable[[BaseException | None], None]) -> None:
        """``fn(*args)`` on the thread, then ``then(None)``, or ``then(error)`` if it raised, in
        the calling loop."""
        self._requests.put((asyncio.get_running_loop(), fn, args, then))

    def stop(self) -> None:
        """The thread ends after the calls already asked for."""
        self._requests.put(None)

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            loop, fn, args, then = request
            try:
                fn(*args)
            except BaseException as error:  # handed to the loop, as to_thread would
                loop.call_soon_threadsafe(then, error)
            else:
                loop.call_soon_threadsafe(then, None)


class FileClapLog:
    def __init__(self, path: Path, *, max_batch: int = 5000) -> None:
        self.path = path
        self.max_batch = max_batch
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if created:
            _fsync_directory(path.parent)
        self._durable_bytes = self._set_aside_torn_tail()
        # A predecessor that crashed may have written lines it never synced: sync them before
        # any reader may apply them.
        os.fsync(self._fd)
        # The offset the next append gets; readers read the lines before it, never further.
        self.end_offset = _count_lines(self._fd, self._durable_bytes)
        self._queue: list[tuple[bytes, ClapRecorded, asyncio.Future[int]]] = []
        self._recent: deque[DurableBatch] = deque()
        self._recent_events = 0
        self._disk: _DiskThread | None = None
        self._writing = False  # a batch is with the disk thread: the next one waits (group commit)
        self._write_soon = False  # _write_next is scheduled
        self._idle = asyncio.Event()  # nothing queued, nothing being written
        self._idle.set()
        # Set, and replaced by a new one, each time the durable end moves (or the log closes).
        self._durable_moved = asyncio.Event()
        self._cut_pending = False
        self._closed = False
        self._drained = False  # closed, and everything queued before is written or refused

    def _set_aside_torn_tail(self) -> int:
        """Cut the bytes after the last newline off into a side file; return the new size."""
        size = os.fstat(self._fd).st_size
        cut = _after_last_newline(self._fd, size)
        if cut == size:
            return size
        try:
            kept_in = f"set aside in {self._copy_to_side_file(cut, size)}"
        except OSError as error:
            # They were never acked: losing them costs nothing, refusing to start would.
            kept_in = f"not set aside ({error!r}); they began {os.pread(self._fd, 200, cut)!r}"
        os.ftruncate(self._fd, cut)
        log.warning(
            "%s: %d bytes after the last complete line (byte %d, offset %d) were torn by a crash and "
            "never acknowledged; %s",
            self.path, size - cut, cut, _count_lines(self._fd, cut), kept_in,
        )
        return cut

    def _copy_to_side_file(self, start: int, end: int) -> Path:
        side = self.path.with_name(f"{self.path.name}.torn-at-{start}")
        tries = 1
        while side.exists():  # torn at the same byte before: keep both
            side = self.path.with_name(f"{self.path.name}.torn-at-{start}.{tries}")
            tries += 1
        with open(side, "xb") as out:
            for position in range(start, end, READ_CHUNK):
                out.write(os.pread(self._fd, min(READ_CHUNK, end - position), position))
            out.flush()
            os.fsync(out.fileno())
        _fsync_directory(self.path.parent)
        return side

    def append(self, clap: ClapRecorded) -> asyncio.Future[int]:
        """The event's offset once it is durable; fails if it could not be made so.

        The ``ClapLog`` port's ``append``, awaited the same way, but a future rather than a
        coroutine: a caller that only needs the outcome (the gateway, once per clap) needs no
        task to run it.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        try:
            if self._closed:
                raise RuntimeError("clap log is closed")
            clap.check()  # what followers are handed must be what a reader of the file decodes
        except Exception as error:
            done.set_exception(error)
            return done
        self._queue.append((clap.to_json() + b"\n", clap, done))
        self._idle.clear()
        if not self._writing and not self._write_soon:
            # Next turn of the loop: the appends of this turn go in the same batch.
            self._write_soon = True
            loop.call_soon(self._write_next)
        return done

    def _write_next(self) -> None:
        """Hand the disk thread the next batch: whatever was queued meanwhile, up to max_batch."""
        self._write_soon = False
        if self._writing:
            return
        if not self._queue:
            self._idle.set()
            return
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        data = b"".join(line for line, _, _ in batch)
        if self._disk is None:
            self._disk = _DiskThread(f"file-log-disk:{self.path.name}")
        self._writing = True
        self._disk.run(self._write_durably, (data, self._durable_bytes), partial(self._written, batch, data))

    def _written(self, batch: list[tuple[bytes, ClapRecorded, asyncio.Future[int]]], data: bytes,
                 error: BaseException | None) -> None:
        """Settle a batch's appends once its write and fsync returned, then write the next batch."""
        self._writing = False
        if error is not None:  # disk full, I/O error: refuse these, keep serving
            log.error(
                "%s: writing %d events at byte %d failed, none acknowledged: %r",
                self.path, len(batch), self._durable_bytes, error,
            )
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(error)
        else:
            first = self.end_offset
            self._remember(DurableBatch(self._durable_bytes, self._durable_bytes + len(data), first,
                                        [event for _, event, _ in batch]))
            self._durable_bytes += len(data)
            self.end_offset += len(batch)
            for index, (_, _, done) in enumerate(batch):
                if not done.done():
                    done.set_result(first + index)
            moved, self._durable_moved = self._durable_moved, asyncio.Event()
            moved.set()
        self._write_next()

    def _remember(self, batch: DurableBatch) -> None:
        self._recent.append(batch)
        self._recent_events += len(batch.events)
        while self._recent_events > RECENT_EVENTS and len(self._recent) > 1:
            self._recent_events -= len(self._recent.popleft().events)

    def _recent_from(self, position: int) -> list[DurableBatch] | None:
        """The remembered batches from byte ``position`` on, if one starts there."""
        recent = self._recent
        for index in range(len(recent) - 1, -1, -1):  # a follower is most often one batch behind
            start = recent[index].start
            if start == position:
                return [recent[later] for later in range(index, len(recent))]
            if start < position:
                return None
        return None

    def _write_durably(self, data: bytes, at: int) -> None:
        """Write ``data`` at byte ``at`` in full and fsync it, or leave the file ending at ``at``."""
        try:
            if self._cut_pending:
                os.ftruncate(self._fd, at)
                self._cut_pending = False
            view = memoryview(data)
            written = 0
            while written < len(data):
                count = os.pwrite(self._fd, view[written:], at + written)
                if count == 0:
                    raise OSError(errno.ENOSPC, "the clap log accepted no more bytes")
                written += count
            os.fsync(self._fd)
        except BaseException:
            # Whatever part reached the file was never acked: cut it off so the next batch does
            # not start mid-line. If even that fails, the next write cuts first.
            try:
                os.ftruncate(self._fd, at)
            except OSError:
                self._cut_pending = True
            raise

    async def read(self, from_offset: int = 0, *, follow: bool = False) -> AsyncIterator[tuple[int, ClapRecorded]]:
        """Durable events from ``from_offset`` on; with ``follow``, keep waiting for new ones."""
        offset = 0
        position = 0
        with open(self.path, "rb", buffering=0) as f:
            while True:
                recent = self._recent_from(position) if offset >= from_offset else None
                if recent is not None:
                    for batch in recent:
                        for offset, event in enumerate(batch.events, batch.first_offset):
                            yield offset, event
                        offset = batch.first_offset + len(batch.events)
                        position = batch.end
                else:
                    for line_at, length, line in _lines(f, position, self._durable_bytes):
                        if offset >= from_offset:
                            event = self._decode(line, offset, line_at, length)
                            if event is not None:
                                yield offset, event
                        offset += 1
                        position = line_at + length + 1
                if not follow or self._drained:
                    return
                if self._durable_bytes == position and not self._drained:
                    await self._durable_moved.wait()

    def _decode(self, line: bytes | None, offset: int, at: int, length: int) -> ClapRecorded | None:
        try:
            if line is None:
                raise ValueError("longer than any clap event")
            return ClapRecorded.from_json(line)
        except Exception as error:
            log.warning(
                "%s: line at offset %d (byte %d, %d bytes) is not a clap event, skipped: %r",
                self.path, offset, at, length, error,
            )
            return None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._idle.wait()  # what was queued before the close is written or refused
        if self._disk is not None:
            self._disk.stop()
        self._drained = True
        self._durable_moved.set()
        os.close(self._fd)


def _lines(f: BinaryIO, start: int, end: int) -> Iterator[tuple[int, int, bytes | None]]:
    """(byte position, length, line) for each line in ``[start, end)``, newline excluded.

    ``end`` is always just after a newline (the durable end), so every line in range is complete.
    A line longer than a read chunk cannot be a clap event: it comes as ``None``, so it is
    reported without holding it in memory.
    """
    position = start
    while position < end:
        f.seek(position)
        chunk = f.read(min(READ_CHUNK, end - position))
        last = chunk.rfind(b"\n") + 1
        if last == 0:
            length = _length_to_newline(f, position, end)
            yield position, length, None
            position += length + 1
            continue
        for line in chunk[: last - 1].split(b"\n"):
            yield position, len(line), line
            position += len(line) + 1


def _length_to_newline(f: BinaryIO, start: int, end: int) -> int:
    position = start
    while position < end:
        f.seek(position)
        chunk = f.read(min(READ_CHUNK, end - position))
        newline = chunk.find(b"\n")
        if newline >= 0:
            return position + newline - start
        position += len(chunk)
    return end - start


def _after_last_newline(fd: int, size: int) -> int:
    position = size
    while position > 0:
        start = max(0, position - READ_CHUNK)
        newline = os.pread(fd, position - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


def _count_lines(fd: int, end: int) -> int:
    return sum(os.pread(fd, min(READ_CHUNK, end - at), at).count(b"\n") for at in range(0, end, READ_CHUNK))


def _fsync_directory(directory: Path) -> None:
    """Make a new file's name durable, not only its contents."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
