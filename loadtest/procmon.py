"""CPU, RSS and open sockets of given processes over a run, read from /proc.

CPU is ``utime + stime`` from /proc/PID/stat, with ``stime`` (the kernel's part) also kept apart;
RSS is ``VmRSS`` from /proc/PID/status; open descriptors are counted in /proc/PID/fd (a gateway's
fds are its sockets, give or take a few files). The whole machine's busy share comes from
/proc/stat, to tell a saturated host from a slow process.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """CPU seconds in user space and in the kernel (utime, stime)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may contain spaces and parentheses: split after the last ")".
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main_thread_wait_s(pid: int) -> float:
    """Seconds the main thread spent runnable but waiting for a core (/proc/PID/schedstat, field 2).

    For an event-loop process that is the starvation measure: a high share says the machine, not
    the process's own code, set its pace.
    """
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_jiffies() -> dict[str, int]:
    """The first line of /proc/stat: jiffies spent by all cores in each state since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return dict(zip(CPU_FIELDS, values))


def machine_shares(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Share of all cores per state between two readings, plus ``busy`` (not idle or iowait).

    ``softirq`` matters here: loopback TCP delivers the receiver's half of a send inside the
    sender's softirq, which the kernel accounts to the machine, not to the sending process.
    """
    delta = {k: after[k] - before[k] for k in CPU_FIELDS}
    total = sum(delta.values()) or 1
    shares = {k: delta[k] / total for k in ("user", "system", "softirq", "steal")}
    shares["busy"] = 1 - (delta["idle"] + delta["iowait"]) / total
    return shares


def all_processes_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (command line, CPU seconds) of every process now; vanished ones are skipped."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:100]
            out[pid] = (command, cpu_seconds(pid))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


def busiest_between(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                    seconds: float, exclude: set[int], top: int = 6) -> list[dict[str, object]]:
    """Processes outside the run that used the most CPU between two snapshots: the noise."""
    used = [
        (after[pid][1] - before[pid][1], pid, after[pid][0])
        for pid in after.keys() & before.keys() if pid not in exclude
    ]
    used.sort(reverse=True)
    return [{"pid": pid, "cores": round(cpu / seconds, 3), "command": command}
            for cpu, pid, command in used[:top] if seconds > 0 and cpu / seconds >= 0.01]


@dataclass
class Sample:
    at: float
    cpu_s: float
    rss_kb: int
    fds: int
    wait_s: float
    kernel_s: float = 0.0


@dataclass
class ProcessSeries:
    label: str
    pid: int
    samples: list[Sample] = field(default_factory=list)
    gone: bool = False


class ProcMonitor:
    """Samples every ``interval_s`` until stopped; bounded by ``max_duration_s`` all the same."""

    def __init__(self, interval_s: float = 0.5, max_duration_s: float = 1800.0) -> None:
        self.interval_s = interval_s
        self.max_duration_s = max_duration_s
        self.series: dict[str, ProcessSeries] = {}
        self.machine: list[tuple[float, dict[str, float]]] = []  # (time, shares of all cores 0..1)
        self._task: asyncio.Task[None] | None = None

    def watch(self, label: str, pid: int) -> None:
        self.series[label] = ProcessSeries(label, pid)

    def own_pids(self) -> set[int]:
        """The run's processes, and py-spy and other helpers started by the orchestrator."""
        pids = {s.pid for s in self.series.values()}
        for pid in list(pids):
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    pids.update(int(c) for c in f.read().split())
            except (FileNotFoundError, ProcessLookupError):
                pass
        return pids

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_duration_s
        previous = machine_jiffies()
        while time.monotonic() < deadline:
            self.sample_once()
            await asyncio.sleep(self.interval_s)
            current = machine_jiffies()
            self.machine.append((time.time(), machine_shares(previous, current)))
            previous = current

    def sample_once(self) -> None:
        now = time.time()
        for series in self.series.values():
            if series.gone:
                continue
            try:
                pid = series.pid
                user_s, kernel_s = cpu_split(pid)
                series.samples.append(Sample(now, user_s + kernel_s, rss_kb(pid), open_fds(pid), main_thread_wait_s(pid), kernel_s))
            except (FileNotFoundError, ProcessLookupError):
                series.gone = True

    def _rate(self, label: str, start: float, end: float, seconds: Callable[[Sample], float]) -> float | None:
        """How fast a cumulative per-sample count of seconds grew between two times."""
        inside = [s for s in self.series[label].samples if start <= s.at <= end]
        if len(inside) < 2:
            return None
        return (seconds(inside[-1]) - seconds(inside[0])) / (inside[-1].at - inside[0].at)

    def cpu_share(self, label: str, start: float, end: float) -> float | None:
        """Average cores used by ``label`` between two times (1.0 = one full core)."""
        return self._rate(label, start, end, lambda s: s.cpu_s)

    def kernel_share(self, label: str, start: float, end: float) -> float | None:
        """Average cores ``label`` used in the kernel between two times (part of ``cpu_share``).

        A fan-out server's kernel time is its ``write()`` calls and, on loopback, much of the
        receiving side's TCP work; what is left is the Python that decides what to write.
        """
        return self._rate(label, start, end, lambda s: s.kernel_s)

    def wait_share(self, label: str, start: float, end: float) -> float | None:
        """Average share of wall time the main thread of ``label`` waited for a core."""
        return self._rate(label, start, end, lambda s: s.wait_s)

    def rss_at(self, label: str, when: float) -> Sample | None:
        """The last sample at or before ``when``."""
        before = [s for s in self.series[label].samples if s.at <= when]
        return before[-1] if before else None

    def machine_busy(self, start: float, end: float) -> dict[str, float] | None:
        """Average shares of all cores per state (busy, user, system, softirq, steal) in a window."""
        inside = [shares for t, shares in self.machine if start <= t <= end]
        if not inside:
            return None
        return {k: round(sum(s[k] for s in inside) / len(inside), 3) for k in inside[0]}

    def to_json(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "processes": {
                label: {"pid": s.pid, "samples": [[x.at, x.cpu_s, x.rss_kb, x.fds, x.wait_s, x.kernel_s] for x in s.samples]}
                for label, s in self.series.items()
            },
            "machine_busy": self.machine,
            "cores": os.cpu_count(),
        }
