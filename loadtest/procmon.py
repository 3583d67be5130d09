"""CPU, RSS and open sockets of given processes over a run, read from /proc.

CPU is ``utime + stime`` from /proc/PID/stat; RSS is ``VmRSS`` from /proc/PID/status; open
descriptors are counted in /proc/PID/fd (a gateway's fds are its sockets, give or take a few
files). The whole machine's busy share comes from /proc/stat, to tell a saturated host from a
slow process.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        # The command name may contain spaces and parentheses: split after the last ")".
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def machine_busy_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class Sample:
    at: float
    cpu_s: float
    rss_kb: int
    fds: int


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
        self.machine: list[tuple[float, float]] = []  # (time, busy share of all cores 0..1)
        self._task: asyncio.Task[None] | None = None

    def watch(self, label: str, pid: int) -> None:
        self.series[label] = ProcessSeries(label, pid)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_duration_s
        previous = machine_busy_jiffies()
        while time.monotonic() < deadline:
            self.sample_once()
            await asyncio.sleep(self.interval_s)
            current = machine_busy_jiffies()
            total = current[1] - previous[1]
            if total > 0:
                self.machine.append((time.time(), (current[0] - previous[0]) / total))
            previous = current

    def sample_once(self) -> None:
        now = time.time()
        for series in self.series.values():
            if series.gone:
                continue
            try:
                series.samples.append(Sample(now, cpu_seconds(series.pid), rss_kb(series.pid), open_fds(series.pid)))
            except (FileNotFoundError, ProcessLookupError):
                series.gone = True

    def cpu_share(self, label: str, start: float, end: float) -> float | None:
        """Average cores used by ``label`` between two times (1.0 = one full core)."""
        inside = [s for s in self.series[label].samples if start <= s.at <= end]
        if len(inside) < 2:
            return None
        return (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].at - inside[0].at)

    def rss_at(self, label: str, when: float) -> Sample | None:
        """The last sample at or before ``when``."""
        before = [s for s in self.series[label].samples if s.at <= when]
        return before[-1] if before else None

    def machine_busy(self, start: float, end: float) -> float | None:
        inside = [b for t, b in self.machine if start <= t <= end]
        return sum(inside) / len(inside) if inside else None

    def to_json(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "processes": {
                label: {"pid": s.pid, "samples": [[x.at, x.cpu_s, x.rss_kb, x.fds] for x in s.samples]}
                for label, s in self.series.items()
            },
            "machine_busy": self.machine,
        }
