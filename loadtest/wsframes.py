"""The client side of RFC 6455, reduced to what a load-test reader needs.

Readers run by the ten thousand on a 2-core machine, so they do not use the ``websockets`` client:
its per-message machinery (Sans-I/O generator, assembler, an ``async for`` per connection) costs
several times what the gateway spends writing the frame, and the measurement would then be of
the readers. Here a reader is a plain asyncio protocol that parses the server's unmasked frames
from the byte stream; outgoing frames (join, pong, close) are rare and reuse ``websockets``'
serializer, which masks them as a client must.
"""
from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator

from websockets.frames import Frame, Opcode

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def handshake_request(host: str, port: int, path: str) -> tuple[bytes, bytes]:
    """The HTTP upgrade request and the ``Sec-WebSocket-Accept`` value the server must answer."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "User-Agent: clap-loadtest\r\n"
        "\r\n"
    ).encode()
    return request, base64.b64encode(hashlib.sha1(key + _GUID).digest())


class HandshakeError(Exception):
    pass


def check_handshake_response(head: bytes, expected_accept: bytes) -> None:
    """Raise :class:`HandshakeError` unless ``head`` (status line and headers) accepts the upgrade."""
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"101":
        raise HandshakeError(lines[0].decode(errors="replace"))
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-accept":
            if value.strip() != expected_accept:
                raise HandshakeError("wrong Sec-WebSocket-Accept")
            return
    raise HandshakeError("no Sec-WebSocket-Accept header")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A complete masked client frame."""
    return Frame(Opcode(opcode), payload).serialize(mask=True)


class FrameParser:
    """Splits the server's byte stream into ``(opcode, payload)`` messages.

    Fragmented messages are reassembled (the gateway never fragments, but a parser that silently
    mis-reads them would report phantom losses). Control frames may arrive between fragments.
    """

    __slots__ = ("_buffer", "_fragments", "_fragment_opcode")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode = OP_TEXT

    def is_empty(self) -> bool:
        """No partial frame or fragmented message is pending."""
        return not self._buffer and not self._fragments

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        position = 0
        end = len(buffer)
        while end - position >= 2:
            b0 = buffer[position]
            length = buffer[position + 1] & 0x7F
            masked = buffer[position + 1] & 0x80
            header = 2
            if length == 126:
                if end - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                header = 4
            elif length == 127:
                if end - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                header = 10
            if masked:
                header += 4  # servers must not mask; tolerate it rather than mis-frame the stream
            frame_end = position + header + length
            if frame_end > end:
                break
            payload = bytes(buffer[position + header : frame_end])
            if masked:
                mask = buffer[position + header - 4 : position + header]
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            position = frame_end
            message = self._assemble(b0 & 0x80, b0 & 0x0F, payload)
            if message is not None:
                yield message
        del buffer[:position]

    def _assemble(self, fin: int, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode >= OP_CLOSE:  # control frames are never fragmented
            return opcode, payload
        if opcode != OP_CONTINUATION:
            if fin:
                return opcode, payload
            self._fragment_opcode = opcode
            self._fragments = [payload]
            return None
        self._fragments.append(payload)
        if not fin:
            return None
        joined = b"".join(self._fragments)
        self._fragments = []
        return self._fragment_opcode, joined
