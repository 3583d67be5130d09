"""The embedded clap log: one append-only file of JSON lines, fsynced before any ack.

Appends that arrive together share one write and one fsync (group commit), so durability does
not cost one disk flush per clap. The line number is the offset.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from core.messages import ClapRecorded


class FileClapLog:
    def __init__(self, path: Path, *, max_batch: int = 5000) -> None:
        self.path = path
        self.max_batch = max_batch
        path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        self._file = open(path, "ab", buffering=0)
        self.end_offset = self._count_lines()  # the offset the next append will get
        self._queue: list[tuple[bytes, asyncio.Future[int]]] = []
        self._wakeup = asyncio.Event()
        self._appended = asyncio.Condition()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def _drop_torn_tail(self) -> None:
        """A crash mid-write can leave a partial last line; it was never acked, so drop it."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def _count_lines(self) -> int:
        with open(self.path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))

    async def append(self, clap: ClapRecorded) -> int:
        if self._closed:
            raise RuntimeError("clap log is closed")
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="file-log-writer")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((clap.to_json() + b"\n", done))
        self._wakeup.set()
        return await done

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                try:
                    await asyncio.to_thread(self._write_and_sync, b"".join(line for line, _ in batch))
                except Exception as error:  # disk full, I/O error: refuse these, keep serving
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for index, (_, done) in enumerate(batch):
                    if not done.done():
                        done.set_result(self.end_offset + index)
                self.end_offset += len(batch)
                async with self._appended:
                    self._appended.notify_all()

    def _write_and_sync(self, data: bytes) -> None:
        self._file.write(data)
        os.fsync(self._file.fileno())

    async def read(self, from_offset: int = 0, *, follow: bool = False) -> AsyncIterator[tuple[int, ClapRecorded]]:
        """Events from ``from_offset`` on; with ``follow``, keep waiting for new ones."""
        offset = 0
        position = 0
        with open(self.path, "rb") as f:
            while True:
                f.seek(position)
                chunk = f.read(1 << 20)
                end = chunk.rfind(b"\n") + 1
                for line in chunk[:end].splitlines():
                    if offset >= from_offset:
                        yield offset, ClapRecorded.from_json(line)
                    offset += 1
                position += end
                if end:
                    continue
                if not follow or self._closed:
                    return
                async with self._appended:
                    try:
                        await asyncio.wait_for(self._appended.wait(), timeout=0.5)
                    except TimeoutError:
                        pass

    async def close(self) -> None:
        self._closed = True
        while self._queue:
            await asyncio.sleep(0.01)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        self._file.close()
