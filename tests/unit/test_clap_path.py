"""The per-clap path's small parts: the append deadlines, the ack's frame, the log event's check.

No sockets and no clock: futures stand in for appends, time is a number, a fake transport
records what is written.
"""
from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from websockets.protocol import State

from core.messages import ClapRecorded, undo_recorded
from gateway.rooms import text_frame
from gateway.server import AppendDeadlines, small_text_frame, write_now


async def test_appends_past_their_deadline_are_cancelled_and_finished_ones_forgotten():
    loop = asyncio.get_running_loop()
    deadlines = AppendDeadlines(timeout_s=5.0)
    first, second, third = loop.create_future(), loop.create_future(), loop.create_future()
    deadlines.watch(first, now=100.0)
    deadlines.watch(second, now=101.0)
    deadlines.watch(third, now=102.0)
    first.set_result(0)  # durable in time

    assert deadlines.expire(now=104.0) == 106.0  # the first is forgotten, the second is next
    assert len(deadlines) == 2
    assert deadlines.expire(now=106.0) == 107.0
    assert second.cancelled() and not third.done()
    assert len(deadlines) == 1
    third.set_result(2)
    assert deadlines.expire(now=106.5) is None
    assert len(deadlines) == 0
    assert first.result() == 0 and third.result() == 2


async def test_an_append_finished_at_its_deadline_is_not_cancelled():
    deadlines = AppendDeadlines(timeout_s=1.0)
    append = asyncio.get_running_loop().create_future()
    deadlines.watch(append, now=0.0)
    append.set_exception(OSError("disk full"))
    assert deadlines.expire(now=1.0) is None
    assert not append.cancelled()
    assert isinstance(append.exception(), OSError)


async def test_the_deadline_watcher_cancels_a_hung_append_and_sleeps_while_nothing_waits():
    deadlines = AppendDeadlines(timeout_s=0.05)
    watcher = asyncio.create_task(deadlines.run())
    try:
        await asyncio.sleep(0.01)  # nothing watched: it waits without a deadline
        loop = asyncio.get_running_loop()
        hung, durable = loop.create_future(), loop.create_future()
        deadlines.watch(hung, loop.time())
        deadlines.watch(durable, loop.time())
        durable.set_result(7)
        await asyncio.wait_for(asyncio.wait([hung]), 10)
        assert hung.cancelled()
        assert durable.result() == 7
        assert len(deadlines) == 0
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


@pytest.mark.parametrize("size", [0, 1, 60, 125, 126, 127, 300, 70_000])
def test_a_small_text_frame_is_the_frame_websockets_writes(size):
    payload = b"x" * size
    assert small_text_frame(payload) == text_frame(payload)


class FakeTransport:
    def __init__(self, buffered: int = 0, refuses: bool = False) -> None:
        self.buffered = buffered
        self.refuses = refuses
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        if self.refuses:
            raise RuntimeError("Cannot call write() after write_eof()")
        self.written.append(data)


class FakeConnection:
    def __init__(self, transport: FakeTransport, state: State = State.OPEN) -> None:
        self.transport = transport
        self.state = state


def test_an_answer_goes_straight_to_a_socket_that_drains():
    transport = FakeTransport(buffered=100)
    assert write_now(FakeConnection(transport), b'{"type":"ack","id":"c1","seq":8}', 1000)
    assert transport.written == [text_frame(b'{"type":"ack","id":"c1","seq":8}')]


def test_a_backed_up_socket_is_left_to_send_which_waits_for_it_to_drain():
    transport = FakeTransport(buffered=1000)
    assert not write_now(FakeConnection(transport), b"{}", 1000)
    assert transport.written == []


@pytest.mark.parametrize("state", [State.CLOSING, State.CLOSED])
def test_a_closing_connection_gets_nothing(state):
    transport = FakeTransport()
    assert write_now(FakeConnection(transport, state), b"{}", 1000)
    assert transport.written == []


def test_a_socket_half_closed_under_the_handshake_is_not_an_error():
    assert write_now(FakeConnection(FakeTransport(refuses=True)), b"{}", 1000)


VALID = [
    ClapRecorded("a-1", "u_1", 1, "c1", 1_700_000_000_000),
    ClapRecorded("a-1", "u_1", 50, "x" * 64, 0),
    undo_recorded("a-1", "u_1", "undo-1", 5),
]


@pytest.mark.parametrize("event", VALID)
def test_a_checked_event_reads_back_from_the_log_equal_to_itself(event):
    event.check()
    assert ClapRecorded.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    "event",
    [
        replace(VALID[0], count=0),
        replace(VALID[0], count=51),
        replace(VALID[0], count=True),
        replace(VALID[0], count=2.0),
        replace(VALID[0], article="no spaces"),
        replace(VALID[0], user=""),
        replace(VALID[0], clap_id="x" * 65),
        replace(VALID[0], at_ms=1.5),
        replace(VALID[0], kind="boost"),
        replace(VALID[2], count=3),  # to_json drops an undo's count: it would read back as 0
    ],
)
def test_check_refuses_what_would_not_read_back_equal(event):
    with pytest.raises(ValueError):
        event.check()
    try:
        read_back = ClapRecorded.from_json(event.to_json())
    except (ValueError, TypeError):
        return
    assert read_back != event
