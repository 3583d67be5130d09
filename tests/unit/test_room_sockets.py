"""The fan-out (``RoomRegistry``) against a real loopback socket whose reader does not read: every
frame whole and in order while the kernel's buffer fills, asyncio queues, and the room holds the
newest frame of each kind until the socket drains."""
from __future__ import annotations

import asyncio
import socket

from core.messages import CountChanged
from gateway.rooms import Reader, RoomRegistry, text_frame


async def connected_pair() -> tuple[asyncio.Transport, socket.socket]:
    """A server-side transport (what a gateway writes to) and the raw client socket (the reader)."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Accept, "127.0.0.1", 0, family=socket.AF_INET)
    client = socket.create_connection(server.sockets[0].getsockname()[:2])
    transport = await asyncio.wait_for(accepted, 5)
    server.close()
    return transport, client


def frames_in(stream: bytes) -> list[bytes]:
    """The payloads of the unmasked server frames in a byte stream; a torn frame fails."""
    payloads, at = [], 0
    while at < len(stream):
        length, at = stream[at + 1] & 0x7F, at + 2
        if length == 126:
            length, at = int.from_bytes(stream[at : at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(stream[at : at + 8], "big"), at + 8
        assert at + length <= len(stream), "a frame cut short"
        payloads.append(stream[at : at + length])
        at += length
    return payloads


async def test_frames_arrive_whole_and_in_order_while_a_reader_does_not_read():
    transport, client = await connected_pair()
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    rooms = RoomRegistry(write_buffer_high=64 * 1024)
    reader = Reader(transport)
    rooms.join(reader, "a")
    big = "x" * 3000  # frames that fill the small socket buffer within a few writes
    sent = []
    for seq in range(1, 200):  # the reader does not read: the kernel fills, then asyncio queues
        update = CountChanged("a", seq, 1, seq, 1, 0)
        await rooms.publish(update)
        sent.append(seq)
        rooms._write_all([reader], "pad", text_frame(big.encode()))
    assert transport.get_write_buffer_size() > 0  # some went through asyncio's queue
    client.setblocking(False)
    received, quiet = bytearray(), 0
    for _ in range(5000):  # read until the gateway's side holds nothing and nothing more comes
        try:
            received += client.recv(1 << 20)
            quiet = 0
        except BlockingIOError:
            quiet += 1
            if quiet > 20 and transport.get_write_buffer_size() == 0 and reader.pending is None:
                break
        rooms.flush_backlog()
        await asyncio.sleep(0.001)
    totals = [frame for frame in frames_in(bytes(received)) if not frame.startswith(b"x")]
    seqs = [int(frame.split(b'"seq":')[1].split(b",")[0]) for frame in totals]
    assert seqs == sorted(seqs) and seqs[0] == 1 and seqs[-1] == 199  # conflated at most, never reordered
    transport.close()
    client.close()
