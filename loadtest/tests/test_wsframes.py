"""The reader's frame parser against websockets' own serializer."""
from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from loadtest.wsframes import (
    OP_PING,
    OP_TEXT,
    FrameParser,
    HandshakeError,
    check_handshake_response,
    handshake_request,
)


def server_frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, payload, fin=fin).serialize(mask=False)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_every_length_encoding(size: int) -> None:
    payload = b"x" * size
    assert list(FrameParser().feed(server_frame(Opcode.TEXT, payload))) == [(OP_TEXT, payload)]


def test_byte_by_byte_and_several_per_chunk() -> None:
    stream = b"".join(server_frame(Opcode.TEXT, f'{{"seq":{i}}}'.encode()) for i in range(50))
    parser = FrameParser()
    got = [m for i in range(len(stream)) for m in parser.feed(stream[i : i + 1])]
    assert [p for _, p in got] == [f'{{"seq":{i}}}'.encode() for i in range(50)]
    assert list(FrameParser().feed(stream)) == got
    assert parser.is_empty()


def test_fragments_with_a_ping_in_between() -> None:
    stream = (
        server_frame(Opcode.TEXT, b"hel", fin=False)
        + server_frame(Opcode.PING, b"p")
        + server_frame(Opcode.CONT, b"lo", fin=False)
        + server_frame(Opcode.CONT, b"!", fin=True)
    )
    parser = FrameParser()
    assert list(parser.feed(stream)) == [(OP_PING, b"p"), (OP_TEXT, b"hello!")]
    assert parser.is_empty()


def test_partial_frame_is_kept() -> None:
    frame = server_frame(Opcode.TEXT, b"abcdef")
    parser = FrameParser()
    assert list(parser.feed(frame[:4])) == []
    assert not parser.is_empty()
    assert list(parser.feed(frame[4:])) == [(OP_TEXT, b"abcdef")]


def test_handshake_accept_is_checked() -> None:
    _, accept = handshake_request("127.0.0.1", 8000, "/ws")
    check_handshake_response(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + accept, accept)
    with pytest.raises(HandshakeError):
        check_handshake_response(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope", accept)
    with pytest.raises(HandshakeError):
        check_handshake_response(b"HTTP/1.1 503 Service Unavailable\r\n", accept)
