"""One reader process: thousands of websocket readers on one plain epoll loop.

Why not asyncio (or the ``websockets`` client): on this 2-core VM a loopback frame already costs
~8 µs of kernel time, and asyncio adds ~4 µs of Python per socket wake-up (handle objects,
``_run_once``, ``_read_ready``) on top of the parsing. Profiled with py-spy, asyncio readers
spent 9 µs per frame, as much as the server under test spent sending it, so the readers and not
the server set the measured rate. A bare epoll loop does one ``recv`` and a little parsing per
wake-up. Everything here is non-blocking and bounded: the loop exits on ``finish`` or after
``max_lifetime_s``.

Each reader checks every frame: the article (routing), the position (skipped = ``seq`` values the
gateway conflated away for a slow reader; totals are absolute, so a skip loses no claps; duplicate;
out of order), and the latency ``receive time - at``. "Lost" is decided by the orchestrator: a
reader that does not end on its gateway's final total.

With ``plan.log_frames`` every live total is also logged (reader, seq, at, receive time), and at
``finish`` the orchestrator sends the clappers' claps: each clap's latency to each reader is then
computed here, where the log is (``loadtest.clap_latency``).
"""
from __future__ import annotations

import errno
import multiprocessing.connection
import os
import resource
import select
import socket
import time
from array import array
from collections import Counter, deque
from typing import Any

import orjson

from loadtest.clap_latency import METHODS, ClapRecord, ClapTimes, FrameLog, pair_latencies
from loadtest.plans import ReaderPlan, Target
from loadtest.stats import MAX_BUCKET, SUB_BUCKETS, Histogram, bucket_of
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
MAX_LATENCY_SAMPLES = 40_000_000  # 160 MB of float32 per process; beyond it samples are only counted
MAX_SPANS = 200_000  # distinct updates whose first/last arrival is tracked
MAX_LOGGED_FRAMES = 12_000_000  # 28 bytes each: ~340 MB per process at most
RECV_SIZE = 65536

CONNECTING, HANDSHAKE, OPEN, CLOSED = range(4)
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP


class Conn:
    """One reader: its socket, its article, and what it has seen."""

    __slots__ = (
        "sock", "fd", "reader", "attempt", "target_index", "article", "state", "started", "deadline",
        "head", "accept", "parser", "finishing", "total", "epoch", "seq", "updates", "skipped", "duplicates",
        "out_of_order", "misrouted", "other",
    )

    def __init__(self, sock: socket.socket, reader: int, attempt: int, target_index: int, article: str,
                 started: float, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = reader
        self.attempt = attempt
        self.target_index = target_index
        self.article = article
        self.state = CONNECTING
        self.started = started
        self.deadline = deadline
        self.head = b""
        self.accept = b""
        self.parser: FrameParser | None = None  # only for data that is not one whole small frame
        self.finishing = False
        self.total = -1
        self.epoch = -1
        self.seq = -1
        self.updates = self.skipped = self.duplicates = self.out_of_order = self.misrouted = self.other = 0


class Samples:
    """Latencies (ms, float32) in arrival order, with the index where each wall-clock second starts."""

    def __init__(self) -> None:
        self.values = array("f")
        self.seconds: list[tuple[int, int]] = []
        self.dropped = 0
        self._second = -1

    def add(self, second: int, latency_ms: float) -> None:
        if second != self._second:
            self._second = second
            self.seconds.append((second, len(self.values)))
        if len(self.values) < MAX_LATENCY_SAMPLES:
            self.values.append(latency_ms)
        else:
            self.dropped += 1

    def histograms(self) -> dict[int, Histogram]:
        """Per-second bucket histograms (see ``loadtest.stats``), built once at the end with numpy."""
        import numpy as np

        values = np.frombuffer(self.values, dtype=np.float32).astype(np.float64) * 1000.0  # µs
        buckets = np.where(values <= 1.0, 0, np.floor(np.log2(np.maximum(values, 1.0)) * SUB_BUCKETS))
        buckets = np.minimum(buckets, MAX_BUCKET).astype(np.int64)
        out: dict[int, Histogram] = {}
        bounds = self.seconds + [(-1, len(values))]
        for (second, start), (_, end) in zip(bounds, bounds[1:]):
            found, counts = np.unique(buckets[start:end], return_counts=True)
            if len(found):
                histogram = out.setdefault(second, {})
                for bucket, count in zip(found.tolist(), counts.tolist()):
                    histogram[bucket] = histogram.get(bucket, 0) + count
        return out


class ReaderLoop:
    def __init__(self, pipe: multiprocessing.connection.Connection, plan: ReaderPlan, index: int) -> None:
        self.pipe = pipe
        self.plan = plan
        self.index = index
        self.epoll = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.open: list[Conn] = []
        self.connecting: dict[int, Conn] = {}
        self.queue: deque[tuple[int, int]] = deque((g, 0) for g in plan.readers_of(index))
        self.attempted = len(self.queue)
        self.connected = 0
        self.failed = 0
        self.snapshots = 0
        self.closed_unexpectedly = 0
        self.errors: Counter[str] = Counter()
        self.frames: dict[int, int] = {}
        self.updates: dict[int, int] = {}
        self.samples = Samples()
        # Identical bytes reach every reader of an update, so the payload identifies the update:
        # payload -> [first arrival, last arrival, readers]. Last - first = how long the server
        # took to get that one update to all of its readers (the fan-out spread).
        self.spans: dict[bytes, list[float]] = {}
        self.connect_latency: Histogram = {}
        self.marks: list[tuple[str, float, array]] = []
        self.frame_log: FrameLog | None = FrameLog() if plan.log_frames else None
        self.frames_not_logged = 0
        self.done = False

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        pipe_fd = self.pipe.fileno()
        self.epoll.register(pipe_fd, _IN)
        deadline = time.monotonic() + self.plan.max_lifetime_s
        next_progress = 0.0
        while not self.done:
            self._start_connects()
            events = self.epoll.poll(0.05 if self.connecting else 0.25, 4096)
            self._on_events(events, pipe_fd)
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + PROGRESS_INTERVAL_S
                self._expire_connects(time.time())
                self._send(("progress", self.index, self._progress()))
            if now > deadline:
                self.errors["lifetime_exceeded"] += 1
                self._finish()

    def _on_events(self, events: list[tuple[int, int]], pipe_fd: int) -> None:
        """The hot path: one ``recv`` per ready socket, almost always one whole small frame."""
        conns = self.conns
        clock = time.time
        on_text = self._on_text
        frames = 0
        for fd, mask in events:
            conn = conns.get(fd)
            if conn is None:
                if fd == pipe_fd:
                    self._on_commands()
            elif conn.state == OPEN:
                try:
                    data = conn.sock.recv(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as error:
                    self.errors[f"recv:{error.strerror}"] += 1
                    data = b""
                # One unfragmented text frame under 126 bytes, nothing buffered: parse in place.
                if conn.parser is None and len(data) > 2 and data[0] == 0x81 and data[1] == len(data) - 2:
                    on_text(conn, data[2:], clock())
                    frames += 1
                elif data:
                    frames += self._on_data(conn, data)
                else:
                    self._on_closed(conn)
            elif conn.state == CONNECTING:
                self._on_connected(conn, mask)
            elif conn.state == HANDSHAKE:
                self._on_handshake(conn)
        if frames:
            second = int(clock())
            self.frames[second] = self.frames.get(second, 0) + frames

    # -- connecting --------------------------------------------------------------------------

    def _start_connects(self) -> None:
        plan = self.plan
        while self.queue and len(self.connecting) < plan.connect_concurrency:
            g, attempt = self.queue.popleft()
            target_index = g % len(plan.targets)
            try:
                sock = self._open_socket(plan.source_ips[g % len(plan.source_ips)], plan.targets[target_index])
            except OSError as error:
                self._attempt_failed(g, attempt, f"socket:{error.strerror}")
                continue
            now = time.time()
            conn = Conn(sock, g, attempt, target_index, plan.mix.article_for(g), now, now + plan.connect_timeout_s)
            self.conns[conn.fd] = conn
            self.connecting[conn.fd] = conn
            self.epoll.register(conn.fd, _OUT | _ERR)

    @staticmethod
    def _open_socket(source_ip: str, target: Target) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((source_ip, 0))
            sock.setblocking(False)
            code = sock.connect_ex((target.host, target.port))
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, os.strerror(code))
        except OSError:
            sock.close()
            raise
        return sock

    def _on_connected(self, conn: Conn, mask: int) -> None:
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._failed(conn, f"connect:{os.strerror(code)}")
            return
        target = self.plan.targets[conn.target_index]
        request, conn.accept = handshake_request(target.host, target.port, target.path)
        try:
            conn.sock.send(request)  # a few hundred bytes into an empty send buffer
        except OSError as error:
            self._failed(conn, f"connect:{error.strerror}")
            return
        conn.state = HANDSHAKE
        self.epoll.modify(conn.fd, _IN | _ERR)

    def _on_handshake(self, conn: Conn) -> None:
        data = self._recv(conn)
        if data is None:
            return
        conn.head += data
        head, sep, rest = conn.head.partition(b"\r\n\r\n")
        if not sep:
            return
        conn.head = b""
        try:
            check_handshake_response(head, conn.accept)
        except HandshakeError as error:
            self._failed(conn, f"handshake:{error}")
            return
        try:
            conn.sock.send(client_frame(OP_TEXT, orjson.dumps({"type": "join", "article": conn.article})))
        except OSError as error:
            self._failed(conn, f"join:{error.strerror}")
            return
        conn.state = OPEN
        del self.connecting[conn.fd]
        self.open.append(conn)
        self.connected += 1
        bucket = bucket_of((time.time() - conn.started) * 1e6)
        self.connect_latency[bucket] = self.connect_latency.get(bucket, 0) + 1
        if rest:
            count = self._on_data(conn, rest)
            second = int(time.time())
            self.frames[second] = self.frames.get(second, 0) + count

    def _expire_connects(self, now: float) -> None:
        for conn in [c for c in self.connecting.values() if c.deadline < now]:
            self._failed(conn, "connect:timeout")

    def _failed(self, conn: Conn, reason: str) -> None:
        self.connecting.pop(conn.fd, None)
        self._drop(conn)
        self._attempt_failed(conn.reader, conn.attempt, reason)

    def _attempt_failed(self, reader: int, attempt: int, reason: str) -> None:
        self.errors[reason[:120]] += 1
        if attempt + 1 < self.plan.connect_attempts:
            self.queue.append((reader, attempt + 1))  # retried after the others: a later, calmer moment
        else:
            self.failed += 1

    def _drop(self, conn: Conn) -> None:
        conn.state = CLOSED
        self.conns.pop(conn.fd, None)
        try:
            self.epoll.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    # -- reading -----------------------------------------------------------------------------

    def _recv(self, conn: Conn) -> bytes | None:
        """Handshake bytes from the socket, or None when there are none or it closed."""
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as error:
            data = b""
            self.errors[f"recv:{error.strerror}"] += 1
        if data:
            return data
        self._failed(conn, "handshake:closed")
        return None

    def _on_closed(self, conn: Conn) -> None:
        if not conn.finishing:
            self.closed_unexpectedly += 1
        self._drop(conn)

    def _on_data(self, conn: Conn, data: bytes) -> int:
        """Any byte stream: partial, several or fragmented frames, control frames. Returns text frames."""
        now = time.time()
        if conn.parser is None:
            conn.parser = FrameParser()
        count = 0
        for opcode, payload in conn.parser.feed(data):
            if opcode == OP_TEXT:
                count += 1
                self._on_text(conn, payload, now)
            else:
                self._on_control(conn, opcode, payload)
        if conn.parser.is_empty():
            conn.parser = None
        return count

    def _on_control(self, conn: Conn, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            try:
                conn.sock.send(client_frame(OP_PONG, payload))
            except OSError as error:
                self.errors[f"pong:{error.strerror}"] += 1  # the recv that follows sees the close
        elif opcode == OP_CLOSE:
            if not conn.finishing:
                self.errors["server_closed"] += 1
                self.closed_unexpectedly += 1
                conn.finishing = True
            try:
                conn.sock.send(client_frame(OP_CLOSE, payload[:2]))
            except OSError:
                pass  # the server may already have gone; the close is what it asked for

    def _on_text(self, conn: Conn, payload: bytes, now: float) -> None:
        doc = orjson.loads(payload)
        if doc.get("type") != "count":
            conn.other += 1
            return
        if doc["article"] != conn.article:
            conn.misrouted += 1
            return
        epoch = doc["epoch"]
        seq = doc["seq"]
        if conn.seq < 0:  # the total sent on join: a snapshot, not a live update, no latency
            self.snapshots += 1
            conn.epoch, conn.seq, conn.total = epoch, seq, doc["total"]
            return
        if epoch == conn.epoch:
            gap = seq - conn.seq
            if gap <= 0:
                if gap == 0:
                    conn.duplicates += 1
                else:
                    conn.out_of_order += 1
                return
            conn.skipped += gap - 1  # conflated by the gateway: totals are absolute, no clap is lost
        elif epoch < conn.epoch:
            conn.out_of_order += 1
            return
        # (a newer epoch is a rebuild: positions restart and there is nothing to compare)
        conn.epoch, conn.seq, conn.total = epoch, seq, doc["total"]
        conn.updates += 1
        if self.frame_log is not None:
            if len(self.frame_log) < MAX_LOGGED_FRAMES:
                self.frame_log.add(conn.reader, seq, doc["at"], now)
            else:
                self.frames_not_logged += 1
        second = int(now)
        self.updates[second] = self.updates.get(second, 0) + 1
        self.samples.add(second, now * 1000.0 - doc["at"])
        span = self.spans.get(payload)
        if span is not None:
            span[1] = now
            span[2] += 1
        elif len(self.spans) < MAX_SPANS:
            self.spans[payload] = [now, now, 1]

    # -- commands from the orchestrator --------------------------------------------------------

    def _send(self, message: tuple) -> None:
        try:
            self.pipe.send(message)
        except (BrokenPipeError, OSError):
            self.done = True  # the orchestrator is gone: stop

    def _on_commands(self) -> None:
        try:
            while self.pipe.poll():
                command = self.pipe.recv()
                name = command[0]
                if name == "mark":
                    self.marks.append((command[1], time.time(), array("I", (c.updates for c in self.open))))
                elif name == "converge":
                    self._send(("converge", self.index, self._convergence(command[1])))
                elif name == "finish":
                    self._finish(command[1] if len(command) > 1 else None)
        except (EOFError, OSError):
            self.done = True

    def _progress(self) -> dict[str, Any]:
        return {
            "at": time.time(),
            "attempted": self.attempted,
            "connected": self.connected,
            "failed": self.failed,
            "open": sum(1 for c in self.open if c.state == OPEN),
            "snapshots": self.snapshots,
        }

    def _convergence(self, expected: dict[tuple[int, str], int]) -> dict[str, Any]:
        """How many readers of the given (target, article) pairs do not show the expected total."""
        behind = checked = 0
        examples: list[tuple[str, int, int]] = []
        for conn in self.open:
            want = expected.get((conn.target_index, conn.article))
            if want is None:
                continue
            checked += 1
            if conn.total != want:
                behind += 1
                if len(examples) < 5:
                    examples.append((conn.article, conn.total, want))
        return {"checked": checked, "behind": behind, "examples": examples}

    def _finish(self, claps: dict[str, Any] | None = None) -> None:
        for conn in list(self.conns.values()):
            conn.finishing = True
            self._drop(conn)
        self.connecting.clear()
        result = self._result()
        if self.frame_log is not None:
            result.update(self._frame_log_result(claps))
        self._send(("result", self.index, result))
        self.done = True

    def _frame_log_result(self, claps: dict[str, Any] | None) -> dict[str, Any]:
        """Which totals each reader got (for the announcements it missed) and, given the claps
        of the measured window, the per-clap latency histograms of this process's readers."""
        assert self.frame_log is not None
        announced: dict[str, set[int]] = {}
        spans: list[tuple[str, int, int, int]] = []  # article, first seq, last seq, totals received
        articles = {conn.reader: conn.article for conn in self.open}
        for reader, seqs, _, _ in self.frame_log.per_conn():
            article = articles.get(reader)
            if article is None:
                continue
            announced.setdefault(article, set()).update(seqs.tolist())
            spans.append((article, int(seqs[0]), int(seqs[-1]), len(seqs)))
        out: dict[str, Any] = {"announced": {a: sorted(s) for a, s in announced.items()}, "reader_seq_spans": spans,
                               "frames_logged": len(self.frame_log), "frames_not_logged": self.frames_not_logged}
        if claps:
            start, end = claps["window"]
            times = {article: ClapTimes(ClapRecord(article, *row) for row in rows).within(start, end)
                     for article, rows in claps["by_article"].items()}
            out["per_clap"] = pair_latencies(self.frame_log, articles, times, METHODS)
        return out

    def _result(self) -> dict[str, Any]:
        conns = self.open
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "process": self.index,
            "pid": os.getpid(),
            "attempted": self.attempted,
            "connected": self.connected,
            "failed": self.failed,
            "closed_unexpectedly": self.closed_unexpectedly,
            "errors": dict(self.errors),
            "snapshots": self.snapshots,
            "frames": self.frames,
            "updates": self.updates,
            "latency": self.samples.histograms(),
            "latency_samples_dropped": self.samples.dropped,
            "spans": self.spans,
            "connect_latency": self.connect_latency,
            "skipped": sum(c.skipped for c in conns),
            "duplicates": sum(c.duplicates for c in conns),
            "out_of_order": sum(c.out_of_order for c in conns),
            "misrouted": sum(c.misrouted for c in conns),
            "other_messages": sum(c.other for c in conns),
            "readers_with_skips": sum(1 for c in conns if c.skipped),
            "marks": self.marks,
            "final": [(c.target_index, c.article, c.total) for c in conns],
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "max_rss_kb": usage.ru_maxrss,
        }


def child_main(pipe: multiprocessing.connection.Connection, plan: ReaderPlan, index: int) -> None:
    loop = ReaderLoop(pipe, plan, index)
    try:
        loop.run()
    finally:
        loop.epoll.close()
