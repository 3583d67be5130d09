"""The embedded clap log never acks what it did not write in full, and readers see only fsynced lines.

No services needed: each test drives one failure of the disk or of a crash against
``embedded.file_log.FileClapLog`` on a temporary directory.
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.messages import ClapRecorded
from embedded.file_log import FileClapLog
from tests.support.processes import REPO


def clap(clap_id: str) -> ClapRecorded:
    return ClapRecorded("disk-article", "u1", 1, clap_id, 1_000)


def line(clap_id: str) -> bytes:
    return clap(clap_id).to_json() + b"\n"


async def read_all(clap_log: FileClapLog, from_offset: int = 0) -> list[tuple[int, str]]:
    return [(offset, event.clap_id) async for offset, event in clap_log.read(from_offset)]


def is_the_log(fd: int, path: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path)
    except OSError:
        return False


# The disk fills up for real: RLIMIT_FSIZE makes the kernel cut a write short, then refuse the next
# one (EFBIG), exactly as a full disk does. It binds a whole process, so the log runs in a child.
DISK_FILLS_UP = r"""
import asyncio, json, resource, signal, sys
from pathlib import Path
from core.messages import ClapRecorded
from embedded.file_log import FileClapLog

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG, not a dead process
path = Path(sys.argv[1])

def clap(clap_id):
    return ClapRecorded("disk-article", "u1", 1, clap_id, 1_000)

async def attempt(clap_log, ids):
    results = await asyncio.gather(*(clap_log.append(clap(i)) for i in ids), return_exceptions=True)
    return [[i, r if isinstance(r, int) else type(r).__name__] for i, r in zip(ids, results)]

async def main():
    clap_log = FileClapLog(path)
    outcome = {"before": await attempt(clap_log, ["e0", "e1", "e2"])}
    # Room for less than one more line: the next batch's write is cut short mid-line.
    resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 30, resource.RLIM_INFINITY))
    outcome["full"] = await attempt(clap_log, ["b0", "b1", "b2", "b3", "b4"])
    outcome["still_full"] = await attempt(clap_log, ["c0"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    outcome["freed"] = []
    for i in ["f0", "f1", "f2"]:
        outcome["freed"] += await attempt(clap_log, [i])
    outcome["read"] = [[offset, event.clap_id] async for offset, event in clap_log.read(0)]
    await clap_log.close()
    reopened = FileClapLog(path)
    outcome["reopened_end"] = reopened.end_offset
    outcome["reopened_read"] = [[offset, event.clap_id] async for offset, event in reopened.read(0)]
    await reopened.close()
    print(json.dumps(outcome))

asyncio.run(main())
"""


def test_a_disk_that_fills_up_mid_line_acks_nothing_of_the_batch_and_leaves_no_torn_line(tmp_path):
    path = tmp_path / "claps.log"
    child = subprocess.run(
        [sys.executable, "-c", DISK_FILLS_UP, str(path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60,
    )
    assert child.returncode == 0, child.stderr
    outcome = json.loads(child.stdout)
    assert outcome["before"] == [["e0", 0], ["e1", 1], ["e2", 2]]
    # The write was cut short after 30 bytes: the whole batch is refused, none of it acked.
    assert outcome["full"] == [[i, "OSError"] for i in ["b0", "b1", "b2", "b3", "b4"]]
    assert outcome["still_full"] == [["c0", "OSError"]]
    # Once there is room again, appends go on at the next offset, on a clean line.
    assert outcome["freed"] == [["f0", 3], ["f1", 4], ["f2", 5]]
    acked = [[0, "e0"], [1, "e1"], [2, "e2"], [3, "f0"], [4, "f1"], [5, "f2"]]
    assert outcome["read"] == acked
    assert (outcome["reopened_end"], outcome["reopened_read"]) == (6, acked)
    assert path.read_bytes() == b"".join(line(i) for i in ["e0", "e1", "e2", "f0", "f1", "f2"])


async def test_an_fsync_that_fails_acks_nothing_and_leaves_nothing_readable(tmp_path, monkeypatch):
    path = tmp_path / "claps.log"
    clap_log = FileClapLog(path)
    assert await clap_log.append(clap("e0")) == 0
    real_fsync = os.fsync
    failures = []

    def fsync_failing_once(fd: int) -> None:
        if is_the_log(fd, path) and not failures:
            failures.append(fd)
            raise OSError(errno.EIO, "injected I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_once)
    results = await asyncio.gather(*(clap_log.append(clap(f"b{i}")) for i in range(3)), return_exceptions=True)
    assert [type(result) for result in results] == [OSError] * 3
    assert await read_all(clap_log) == [(0, "e0")]
    assert await clap_log.append(clap("e1")) == 1
    assert await read_all(clap_log) == [(0, "e0"), (1, "e1")]
    await clap_log.close()
    assert path.read_bytes() == line("e0") + line("e1")


async def test_a_torn_line_mid_file_is_skipped_with_a_warning_and_every_other_line_keeps_its_offset(tmp_path, caplog):
    path = tmp_path / "claps.log"
    # A write cut short (e2's first 20 bytes), then the next write appended right after it.
    torn_at = len(line("e0") + line("e1"))
    path.write_bytes(line("e0") + line("e1") + line("e2")[:20] + line("e3") + line("e4"))
    clap_log = FileClapLog(path)
    assert clap_log.end_offset == 4
    with caplog.at_level(logging.WARNING, logger="embedded.file_log"):
        assert await read_all(clap_log) == [(0, "e0"), (1, "e1"), (3, "e4")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"offset 2 (byte {torn_at}," in warnings[0]
    assert await clap_log.append(clap("e5")) == 4
    assert await read_all(clap_log, 3) == [(3, "e4"), (4, "e5")]

    # A follower does not stop on it either.
    follower = clap_log.read(0, follow=True)
    assert [await anext(follower) for _ in range(4)] == [
        (0, clap("e0")), (1, clap("e1")), (3, clap("e4")), (4, clap("e5"))
    ]
    await follower.aclose()
    await clap_log.close()


async def test_a_torn_tail_is_set_aside_on_open_and_new_appends_neither_merge_with_it_nor_renumber(tmp_path, caplog):
    path = tmp_path / "claps.log"
    torn = line("e2")[:25]
    acked = line("e0") + line("e1")
    path.write_bytes(acked + torn)
    with caplog.at_level(logging.WARNING, logger="embedded.file_log"):
        clap_log = FileClapLog(path)
    assert clap_log.end_offset == 2
    side = tmp_path / f"claps.log.torn-at-{len(acked)}"
    assert side.read_bytes() == torn
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"(byte {len(acked)}, offset 2)" in warnings[0] and str(side) in warnings[0]
    assert await clap_log.append(clap("e3")) == 2
    assert await read_all(clap_log) == [(0, "e0"), (1, "e1"), (2, "e3")]
    await clap_log.close()
    assert path.read_bytes() == acked + line("e3")
    reopened = FileClapLog(path)
    assert reopened.end_offset == 3
    assert await read_all(reopened) == [(0, "e0"), (1, "e1"), (2, "e3")]
    await reopened.close()


async def test_readers_never_see_a_line_before_its_fsync_completed(tmp_path, monkeypatch):
    path = tmp_path / "claps.log"
    clap_log = FileClapLog(path)
    assert await clap_log.append(clap("e0")) == 0
    real_fsync = os.fsync
    syncing, release = threading.Event(), threading.Event()

    def held_fsync(fd: int) -> None:
        if is_the_log(fd, path):
            syncing.set()
            release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", held_fsync)
    follower = clap_log.read(0, follow=True)
    assert await anext(follower) == (0, clap("e0"))
    appended = asyncio.ensure_future(clap_log.append(clap("e1")))
    try:
        assert await asyncio.to_thread(syncing.wait, 10)
        # e1 is in the file, but its fsync has not returned: nobody may read it yet.
        assert path.read_bytes() == line("e0") + line("e1")
        assert await read_all(clap_log) == [(0, "e0")]
        assert clap_log.end_offset == 1
        next_event = asyncio.ensure_future(anext(follower))
        done, _ = await asyncio.wait([next_event], timeout=0.3)
        assert not done
        assert not appended.done()
    finally:
        release.set()
    assert await appended == 1
    assert await asyncio.wait_for(next_event, 10) == (1, clap("e1"))
    assert await read_all(clap_log) == [(0, "e0"), (1, "e1")]
    await follower.aclose()
    await clap_log.close()


async def test_close_waits_for_queued_appends_and_ends_followers(tmp_path):
    clap_log = FileClapLog(tmp_path / "claps.log")
    appends = [asyncio.ensure_future(clap_log.append(clap(f"e{i}"))) for i in range(50)]
    follower = asyncio.ensure_future(read_following(clap_log))
    await asyncio.sleep(0)
    await clap_log.close()
    assert await asyncio.wait_for(asyncio.gather(*appends), 10) == list(range(50))
    assert await asyncio.wait_for(follower, 10) == [(i, f"e{i}") for i in range(50)]
    with pytest.raises(RuntimeError):
        await clap_log.append(clap("late"))


async def read_following(clap_log: FileClapLog) -> list[tuple[int, str]]:
    return [(offset, event.clap_id) async for offset, event in clap_log.read(0, follow=True)]


def count_decodes(monkeypatch) -> list[int]:
    """The offsets of the lines the log reads back from its file and decodes."""
    decoded: list[int] = []
    real_decode = FileClapLog._decode

    def counting_decode(self, line, offset, at, length):
        decoded.append(offset)
        return real_decode(self, line, offset, at, length)

    monkeypatch.setattr(FileClapLog, "_decode", counting_decode)
    return decoded


async def test_a_caught_up_follower_is_handed_exactly_what_a_reader_of_the_file_decodes(tmp_path, monkeypatch):
    decoded = count_decodes(monkeypatch)
    earlier = FileClapLog(tmp_path / "claps.log")
    await earlier.append(clap("before"))
    await earlier.close()
    clap_log = FileClapLog(tmp_path / "claps.log")  # reopened: "before" is only in the file
    follower = clap_log.read(0, follow=True)
    assert await anext(follower) == (0, clap("before"))
    handed = []
    for round_ in range(20):  # batches of several sizes, each made durable before the next
        batch = [clap(f"r{round_}-{i}") for i in range(round_ % 7 + 1)]
        offsets = await asyncio.gather(*(clap_log.append(event) for event in batch))
        for _ in batch:
            handed.append(await asyncio.wait_for(anext(follower), 10))
        assert [offset for offset, _ in handed[-len(batch):]] == offsets
    assert decoded == [0]  # only the line from before the reopen was read back
    from_file = [(offset, event) async for offset, event in FileClapLog(tmp_path / "claps.log").read(1)]
    assert handed == from_file
    assert len(handed) == sum(r % 7 + 1 for r in range(20))
    await follower.aclose()
    await clap_log.close()


async def test_a_follower_further_behind_than_the_log_remembers_reads_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr("embedded.file_log.RECENT_EVENTS", 3)
    decoded = count_decodes(monkeypatch)
    clap_log = FileClapLog(tmp_path / "claps.log")
    follower = clap_log.read(0, follow=True)
    first = asyncio.ensure_future(anext(follower))
    assert await clap_log.append(clap("e0")) == 0
    assert await asyncio.wait_for(first, 10) == (0, clap("e0"))
    for i in range(1, 12):  # the follower falls 11 events behind; the log remembers the last 3
        assert await clap_log.append(clap(f"e{i}")) == i
    assert [await anext(follower) for _ in range(11)] == [(i, clap(f"e{i}")) for i in range(1, 12)]
    assert decoded == list(range(1, 12))
    late = asyncio.ensure_future(anext(follower))
    assert await clap_log.append(clap("e12")) == 12
    assert await asyncio.wait_for(late, 10) == (12, clap("e12"))
    assert decoded == list(range(1, 12))  # caught up again: handed from memory
    await follower.aclose()
    await clap_log.close()


async def test_an_event_that_would_not_read_back_equal_is_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "claps.log"
    clap_log = FileClapLog(path)
    assert await clap_log.append(clap("e0")) == 0
    with pytest.raises(ValueError):
        await clap_log.append(ClapRecorded("disk-article", "u1", 3, "undo-1", 1_000, "undo"))  # an undo's count is not logged
    with pytest.raises(ValueError):
        await clap_log.append(ClapRecorded("disk article", "u1", 1, "e1", 1_000))
    assert await clap_log.append(clap("e1")) == 1
    assert path.read_bytes() == line("e0") + line("e1")
    assert await read_all(clap_log) == [(0, "e0"), (1, "e1")]
    await clap_log.close()
