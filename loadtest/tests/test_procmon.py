"""The monitor's CPU readings: the kernel's part of a process's CPU, and CPU per delivered frame."""
from __future__ import annotations

import os
import time

import pytest

from loadtest.procmon import ProcMonitor, Sample, cpu_seconds, cpu_split
from loadtest.scenarios import _cpu_per_frame_us


def test_the_kernel_share_is_the_stime_part_of_the_cpu_share() -> None:
    monitor = ProcMonitor()
    monitor.watch("server", 1)
    monitor.series["server"].samples = [Sample(100.0, 10.0, 0, 0, 0.0, 4.0), Sample(102.0, 11.6, 0, 0, 0.0, 5.0)]
    assert monitor.cpu_share("server", 100.0, 102.0) == pytest.approx(0.8)
    assert monitor.kernel_share("server", 100.0, 102.0) == pytest.approx(0.5)
    assert monitor.kernel_share("server", 101.0, 102.0) is None  # one sample says nothing


def test_this_process_reads_its_own_user_and_kernel_seconds() -> None:
    user_before, kernel_before = cpu_split(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # bounded: 50 ms of this process's CPU
        pass
    user_after, kernel_after = cpu_split(os.getpid())
    assert user_after >= user_before and kernel_after >= kernel_before
    assert abs(cpu_seconds(os.getpid()) - (user_after + kernel_after)) < 0.1


def test_cpu_per_frame_splits_the_servers_cores_by_the_frames_they_delivered() -> None:
    phase = {"servers": {"gw": {"cpu_cores_during_run": 0.7, "cpu_kernel_cores_during_run": 0.5}}}
    assert _cpu_per_frame_us(phase, 100_000) == {"user": 2.0, "kernel": 5.0}
    assert _cpu_per_frame_us(phase, None) is None
    assert _cpu_per_frame_us({"servers": {}}, 100_000) is None
