"""The orchestrator's side of the reader processes (the readers themselves are in ``reader_loop``).

It spawns processes, each holding a slice of the readers (well under the 20,000 open files a
process may have), and talks to them over a pipe:

    child -> parent   ("progress", index, {...})             every 0.5 s while alive
    parent -> child   ("mark", name)                         snapshot per-reader update counts now
    parent -> child   ("converge", {(target, article): total}) -> ("converge", index, {...})
    parent -> child   ("finish", claps or None)              close everything -> ("result", index, {...});
                      claps = {"window": (start, end), "by_article": {article: [(sent, acked, ack_seq)]}}
                      makes processes that log frames compute per-clap latency for their readers
"""
from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Callable
from typing import Any

from loadtest.plans import ReaderPlan
from loadtest.reader_loop import PROGRESS_INTERVAL_S, child_main


class ReaderFleet:
    """Starts the reader processes and collects what they measured."""

    def __init__(self, plan: ReaderPlan) -> None:
        self.plan = plan
        self._context = multiprocessing.get_context("spawn")  # no forking of a running event loop
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._pipes: list[multiprocessing.connection.Connection] = []
        self.progress: dict[int, dict[str, Any]] = {}
        self.progress_series: list[tuple[float, int]] = []  # (time, open readers in all processes)
        self._replies: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index in range(self.plan.processes):
            parent, child = self._context.Pipe()
            process = self._context.Process(
                target=child_main, args=(child, self.plan, index), name=f"loadtest-readers-{index}", daemon=True
            )
            process.start()
            child.close()
            self._processes.append(process)
            self._pipes.append(parent)
            loop.add_reader(parent.fileno(), self._on_message, parent)

    def _on_message(self, pipe: multiprocessing.connection.Connection) -> None:
        try:
            while pipe.poll():
                kind, index, body = pipe.recv()
                if kind == "progress":
                    self.progress[index] = body
                    self.progress_series.append((body["at"], self.open_readers()))
                else:
                    self._replies.put_nowait((kind, index, body))
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(pipe.fileno())

    def open_readers(self) -> int:
        return sum(p["open"] for p in self.progress.values())

    def totals(self) -> dict[str, int]:
        keys = ("attempted", "connected", "failed", "open", "snapshots")
        return {k: sum(p[k] for p in self.progress.values()) for k in keys}

    async def wait_connected(
        self, timeout_s: float, on_progress: Callable[[dict[str, int]], None] | None = None
    ) -> dict[str, int]:
        """Until every reader has connected (or failed) and got its first total, or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            totals = self.totals()
            if on_progress is not None:
                on_progress(totals)
            if len(self.progress) == self.plan.processes and totals["attempted"] == self.plan.readers:
                if totals["connected"] + totals["failed"] == totals["attempted"] and totals["snapshots"] >= totals["connected"]:
                    return totals
            if any(not p.is_alive() for p in self._processes):
                raise RuntimeError("a reader process died; see its traceback above")
        return self.totals()

    def _broadcast(self, command: tuple) -> None:
        for pipe in self._pipes:
            pipe.send(command)

    async def _gather(self, kind: str, timeout_s: float) -> dict[int, Any]:
        replies: dict[int, Any] = {}
        deadline = time.monotonic() + timeout_s
        while len(replies) < len(self._pipes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                got, index, body = await asyncio.wait_for(self._replies.get(), remaining)
            except TimeoutError:
                break
            if got == kind:
                replies[index] = body
        return replies

    def mark(self, name: str) -> float:
        self._broadcast(("mark", name))
        return time.time()

    async def convergence(self, expected: dict[tuple[int, str], int], timeout_s: float = 10.0) -> dict[str, Any]:
        self._broadcast(("converge", expected))
        replies = await self._gather("converge", timeout_s)
        examples = [e for r in replies.values() for e in r["examples"]][:5]
        return {
            "checked": sum(r["checked"] for r in replies.values()),
            "behind": sum(r["behind"] for r in replies.values()),
            "examples": examples,
            "processes_answered": len(replies),
        }

    async def finish(self, claps: dict[str, Any] | None = None, timeout_s: float = 180.0) -> list[dict[str, Any]]:
        self._broadcast(("finish", claps))
        replies = await self._gather("result", timeout_s)
        self.stop()
        return [replies[i] for i in sorted(replies)]

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for pipe in self._pipes:
            try:
                loop.remove_reader(pipe.fileno())
            except (ValueError, OSError):
                pass
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()  # our own child, by its handle
                process.join(timeout=5)
        for pipe in self._pipes:
            pipe.close()
        self._processes.clear()
        self._pipes.clear()
