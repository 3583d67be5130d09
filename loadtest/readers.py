"""Reader processes: many websocket readers per process, measuring every frame they receive.

The orchestrator (``ReaderFleet``) spawns processes, each holding a slice of the readers (well
under the 20,000 open files a process may have), and talks to them over a pipe:

    child -> parent   ("progress", {...})           every 0.5 s while alive
    parent -> child   ("mark", name)                snapshot per-reader update counts now
    parent -> child   ("converge", {(target, article): total}) -> ("converge", {...})
    parent -> child   ("finish",)                   close everything -> ("result", {...})

Each reader checks every frame it gets: the article (routing), the position (lost = skipped
``seq`` values, duplicate, out of order), and the latency ``receive time - at``; ``at`` is the
gateway's receive time of the newest clap in the window (same host, same clock), so this is the
clap-to-reader latency of the newest clap of each update.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import resource
import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadtest.articles import ArticleMix
from loadtest.stats import Histogram, bucket_of
from loadtest.wsframes import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    HandshakeError,
    check_handshake_response,
    client_frame,
    handshake_request,
)

# Linux: choose the source port at connect() time, unique per 4-tuple, instead of reserving one
# at bind() for the source address; without it each source address caps out at the ephemeral range.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
PROGRESS_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str = "/ws"

    @classmethod
    def from_url(cls, url: str) -> Target:
        """``ws://host:port/path`` or ``http://host:port`` (path defaults to ``/ws``)."""
        scheme, _, rest = url.partition("://")
        hostport, slash, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        if scheme not in ("ws", "http") or not host or not port:
            raise ValueError(f"expected ws://host:port[/path] or http://host:port, got {url!r}")
        path = "/" + path if slash and path else "/ws"
        return cls(host, int(port), path)

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class ReaderPlan:
    targets: tuple[Target, ...]
    mix: ArticleMix
    readers: int
    processes: int
    source_ips: tuple[str, ...] = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
    connect_concurrency: int = 64  # in-flight handshakes per process: the gateway's accept backlog is 100
    connect_timeout_s: float = 20.0
    connect_attempts: int = 3
    max_lifetime_s: float = 900.0  # a reader process exits by itself after this, whatever happens

    def readers_of(self, process: int) -> range:
        return range(process, self.readers, self.processes)


# -- one connection ------------------------------------------------------------------------------


class ProcessStats:
    """Counters shared by the readers of one process; per-second series keyed by Unix second."""

    def __init__(self) -> None:
        self.frames: dict[int, int] = {}
        self.updates: dict[int, int] = {}
        self.latency: dict[int, Histogram] = {}
        self.connect_latency: Histogram = {}
        self.errors: Counter[str] = Counter()
        self.closed_unexpectedly = 0
        self.snapshots = 0
        self._second = -1
        self._histogram: Histogram = {}

    def histogram_for(self, second: int) -> Histogram:
        if second != self._second:
            self._second = second
            self._histogram = self.latency.setdefault(second, {})
        return self._histogram


class Reader(asyncio.Protocol):
    """One websocket reader of one article."""

    def __init__(self, stats: ProcessStats, target: Target, target_index: int, article: str) -> None:
        self.stats = stats
        self.target = target
        self.target_index = target_index
        self.article = article
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.parser = FrameParser()
        self._head = b""
        self._accept = b""
        self.is_open = False
        self.finishing = False
        self.total = -1
        self.epoch = -1
        self.seq = -1
        self.updates = 0
        self.lost = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.misrouted = 0
        self.other = 0

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request, self._accept = handshake_request(self.target.host, self.target.port, self.target.path)
        transport.write(request)

    def data_received(self, data: bytes) -> None:
        if not self.is_open:
            data = self._handshake(data)
            if not data:
                return
        now = time.time()
        count = 0
        for opcode, payload in self.parser.feed(data):
            if opcode == OP_TEXT:
                count += 1
                self._on_text(payload, now)
            else:
                self._on_control(opcode, payload)
        if count:
            second = int(now)
            frames = self.stats.frames
            frames[second] = frames.get(second, 0) + count

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed during the handshake"))
        elif not self.finishing:
            self.stats.closed_unexpectedly += 1
        self.is_open = False

    # -- handshake and control -------------------------------------------------------------------

    def _handshake(self, data: bytes) -> bytes:
        """Consume the HTTP response; returns the bytes after it (frames already sent)."""
        self._head += data
        head, sep, rest = self._head.partition(b"\r\n\r\n")
        if not sep:
            return b""
        self._head = b""
        try:
            check_handshake_response(head, self._accept)
        except HandshakeError as error:
            self.opened.set_exception(error)
            assert self.transport is not None
            self.transport.close()
            return b""
        self.is_open = True
        assert self.transport is not None
        self.transport.write(client_frame(OP_TEXT, orjson.dumps({"type": "join", "article": self.article})))
        self.opened.set_result(None)
        return rest

    def _on_control(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == OP_PING:
            self.transport.write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            if not self.finishing:
                self.stats.errors["server_closed"] += 1
            self.transport.write(client_frame(OP_CLOSE, payload[:2]))
            self.transport.close()

    # -- the hot path: keep it to a parse, a few compares and a histogram bump ------------------

    def _on_text(self, payload: bytes, now: float) -> None:
        doc = orjson.loads(payload)
        if doc.get("type") != "count":
            self.other += 1
            return
        if doc["article"] != self.article:
            self.misrouted += 1
            return
        epoch = doc["epoch"]
        seq = doc["seq"]
        if self.seq < 0:
            self.stats.snapshots += 1  # the total sent on join: not a live update, no latency
        elif epoch == self.epoch:
            gap = seq - self.seq
            if gap <= 0:
                if gap == 0:
                    self.duplicates += 1
                else:
                    self.out_of_order += 1
                return
            self.lost += gap - 1
            self._count_update(doc, now)
        elif epoch > self.epoch:
            self._count_update(doc, now)  # a rebuild: positions restart, nothing to compare
        else:
            self.out_of_order += 1
            return
        self.epoch = epoch
        self.seq = seq
        self.total = doc["total"]

    def _count_update(self, doc: dict[str, Any], now: float) -> None:
        self.updates += 1
        stats = self.stats
        second = int(now)
        stats.updates[second] = stats.updates.get(second, 0) + 1
        histogram = stats.histogram_for(second)
        bucket = bucket_of(now * 1e6 - doc["at"] * 1000.0)
        histogram[bucket] = histogram.get(bucket, 0) + 1

    def close(self) -> None:
        self.finishing = True
        if self.transport is not None:
            self.transport.close()


# -- one reader process --------------------------------------------------------------------------


@dataclass
class Mark:
    name: str
    at: float
    updates: array  # per reader, in the process's reader order


@dataclass
class ProcessState:
    readers: list[Reader] = field(default_factory=list)
    attempted: int = 0
    connected: int = 0
    failed: int = 0
    marks: list[Mark] = field(default_factory=list)


async def open_socket(source_ip: str, target: Target) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source_ip, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (target.host, target.port))
    except BaseException:
        sock.close()
        raise
    return sock


class ReaderProcess:
    def __init__(self, conn: multiprocessing.connection.Connection, plan: ReaderPlan, index: int) -> None:
        self.conn = conn
        self.plan = plan
        self.index = index
        self.stats = ProcessStats()
        self.state = ProcessState()
        self.done = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._on_command)
        connecting = asyncio.create_task(self._connect_all())
        progress = asyncio.create_task(self._report_progress())
        try:
            await asyncio.wait_for(self.done.wait(), self.plan.max_lifetime_s)
        except TimeoutError:
            self.stats.errors["lifetime_exceeded"] += 1
            self._finish()
        finally:
            loop.remove_reader(self.conn.fileno())
            connecting.cancel()
            progress.cancel()

    async def _connect_all(self) -> None:
        slots = asyncio.Semaphore(self.plan.connect_concurrency)
        readers = list(self.plan.readers_of(self.index))
        self.state.attempted = len(readers)
        await asyncio.gather(*(self._connect(slots, g) for g in readers))

    async def _connect(self, slots: asyncio.Semaphore, g: int) -> None:
        plan = self.plan
        target_index = g % len(plan.targets)
        target = plan.targets[target_index]
        source_ip = plan.source_ips[g % len(plan.source_ips)]
        for attempt in range(plan.connect_attempts):
            async with slots:
                started = time.time()
                reader = Reader(self.stats, target, target_index, plan.mix.article_for(g))
                try:
                    async with asyncio.timeout(plan.connect_timeout_s):
                        sock = await open_socket(source_ip, target)
                        await asyncio.get_running_loop().create_connection(lambda: reader, sock=sock)
                        await reader.opened
                except (OSError, TimeoutError, HandshakeError) as error:
                    reader.close()
                    self.stats.errors[f"connect:{type(error).__name__}:{error}"[:120]] += 1
                    continue
            bucket = bucket_of((time.time() - started) * 1e6)
            self.stats.connect_latency[bucket] = self.stats.connect_latency.get(bucket, 0) + 1
            self.state.readers.append(reader)
            self.state.connected += 1
            return
        self.state.failed += 1

    async def _report_progress(self) -> None:
        while True:
            self.conn.send(("progress", self.index, self._progress()))
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    def _progress(self) -> dict[str, Any]:
        readers = self.state.readers
        return {
            "at": time.time(),
            "attempted": self.state.attempted,
            "connected": self.state.connected,
            "failed": self.state.failed,
            "open": sum(1 for r in readers if r.is_open),
            "snapshots": self.stats.snapshots,
        }

    def _on_command(self) -> None:
        while self.conn.poll():
            command = self.conn.recv()
            name = command[0]
            if name == "mark":
                updates = array("I", (r.updates for r in self.state.readers))
                self.state.marks.append(Mark(command[1], time.time(), updates))
            elif name == "converge":
                self.conn.send(("converge", self.index, self._convergence(command[1])))
            elif name == "finish":
                self._finish()

    def _convergence(self, expected: dict[tuple[int, str], int]) -> dict[str, Any]:
        """How many readers of the given (target, article) pairs do not show the expected total."""
        behind = 0
        checked = 0
        examples: list[tuple[str, int, int]] = []
        for reader in self.state.readers:
            want = expected.get((reader.target_index, reader.article))
            if want is None:
                continue
            checked += 1
            if reader.total != want:
                behind += 1
                if len(examples) < 5:
                    examples.append((reader.article, reader.total, want))
        return {"checked": checked, "behind": behind, "examples": examples}

    def _finish(self) -> None:
        for reader in self.state.readers:
            reader.close()
        self.conn.send(("result", self.index, self._result()))
        self.done.set()

    def _result(self) -> dict[str, Any]:
        readers = self.state.readers
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "process": self.index,
            "pid": os.getpid(),
            "attempted": self.state.attempted,
            "connected": self.state.connected,
            "failed": self.state.failed,
            "closed_unexpectedly": self.stats.closed_unexpectedly,
            "errors": dict(self.stats.errors),
            "snapshots": self.stats.snapshots,
            "frames": self.stats.frames,
            "updates": self.stats.updates,
            "latency": self.stats.latency,
            "connect_latency": self.stats.connect_latency,
            "lost": sum(r.lost for r in readers),
            "duplicates": sum(r.duplicates for r in readers),
            "out_of_order": sum(r.out_of_order for r in readers),
            "misrouted": sum(r.misrouted for r in readers),
            "other_messages": sum(r.other for r in readers),
            "readers_with_loss": sum(1 for r in readers if r.lost),
            "marks": [(m.name, m.at, m.updates) for m in self.state.marks],
            "final": [(r.target_index, r.article, r.total) for r in readers],
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "max_rss_kb": usage.ru_maxrss,
        }


def _child_main(conn: multiprocessing.connection.Connection, plan: ReaderPlan, index: int) -> None:
    asyncio.run(ReaderProcess(conn, plan, index).run())


# -- the orchestrator's side ---------------------------------------------------------------------


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
                target=_child_main, args=(child, self.plan, index), name=f"loadtest-readers-{index}", daemon=True
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

    async def wait_connected(self, timeout_s: float, on_progress=None) -> dict[str, int]:
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

    async def finish(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        self._broadcast(("finish",))
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
