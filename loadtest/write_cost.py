"""What one fan-out frame costs the gateway's process, and what writing past asyncio would save.

    python -m loadtest.write_cost [--sockets 2000] [--passes 41]

Opens ``--sockets`` loopback connections inside one asyncio process, then alternates passes that
write one count-sized frame to every server-side socket: the room's own loop
(``RoomRegistry._write_all``: a buffer-size check, then ``transport.write``), and the same frames
through ``os.write`` on each socket's descriptor when nothing is queued, the rest of a partial
write to the transport (a path tried in ``5f98c08`` and reverted: it saved 2-5 % of a frame's
cost). Prints the median CPU time per frame of each; the receivers are the same process's sockets,
drained between passes, so both pay the same loopback delivery and only the write path differs.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from gateway.rooms import Reader, RoomRegistry

FRAME = b"\x81\x70" + b"x" * 112  # an unmasked text frame the size of a count message


class _Sink(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


async def measure(sockets: int, passes: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    accepted: list[asyncio.Transport] = []

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = [(await loop.create_connection(_Sink, "127.0.0.1", port))[0] for _ in range(sockets)]
    while len(accepted) < sockets:
        await asyncio.sleep(0.01)

    rooms = RoomRegistry()
    readers = [Reader(transport) for transport in accepted]
    descriptors = [transport.get_extra_info("socket").fileno() for transport in accepted]

    def room_loop() -> None:
        rooms._write_all(readers, "a", FRAME)

    def past_asyncio() -> None:
        write = os.write
        for transport, fd in zip(accepted, descriptors):
            if transport.get_write_buffer_size() == 0 and not transport.is_closing():
                try:
                    sent = write(fd, FRAME)
                except BlockingIOError:
                    sent = 0
                if sent < len(FRAME):
                    transport.write(FRAME[sent:])

    costs: dict[str, list[float]] = {"the room's loop (transport.write)": [], "os.write on the descriptor": []}
    for _ in range(passes):
        for name, write_all in zip(costs, (room_loop, past_asyncio)):
            began = time.process_time()
            write_all()
            costs[name].append((time.process_time() - began) / sockets * 1e6)
            await asyncio.sleep(0.05)  # the receivers drain
    for transport in clients + accepted:
        transport.close()
    server.close()
    return {f"{name} µs/frame (median of {passes})": round(statistics.median(v), 2) for name, v in costs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=41)
    args = parser.parse_args()
    for name, value in asyncio.run(measure(args.sockets, args.passes)).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
