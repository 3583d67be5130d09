"""What one fan-out frame costs the gateway's process, and what writing past asyncio would save.

    python -m loadtest.write_cost [--sockets 2000] [--passes 41]

Opens ``--sockets`` loopback connections inside one asyncio process, then alternates passes that
write one count-sized frame to every server-side socket: the room's own loop
(``RoomRegistry._write_all``: a buffer-size check, then ``transport.write``), and the same frames
through ``os.write`` on each socket's descriptor when nothing is queued, the rest of a partial
write to the transport (a path tried in ``5f98c08`` and reverted: it saved 2-5 % of a frame's
cost). Prints the median CPU time per frame of each, and its user-space and kernel parts; the
receivers are the same process's sockets, drained between passes, so both pay the same loopback
delivery and only the write path differs.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time

from gateway.rooms import Reader, RoomRegistry

FRAME = b"\x81\x70" + b"x" * 112  # an unmasked text frame the size of a count message


class _Sink(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


async def measure(sockets: int, passes: int) -> dict[str, dict[str, float]]:
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

    paths = {"the room's loop (transport.write)": room_loop, "os.write on the descriptor": past_asyncio}
    per_pass: dict[str, list[float]] = {name: [] for name in paths}
    # The kernel splits a process's CPU into user and system time by clock ticks, too coarse
    # for one pass: the split is the whole run's, the per-frame cost each pass's median.
    user_s = dict.fromkeys(paths, 0.0)
    kernel_s = dict.fromkeys(paths, 0.0)
    for _ in range(passes):
        for name, write_all in paths.items():
            before, began = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
            write_all()
            spent, after = time.process_time() - began, resource.getrusage(resource.RUSAGE_SELF)
            per_pass[name].append(spent / sockets * 1e6)
            user_s[name] += after.ru_utime - before.ru_utime
            kernel_s[name] += after.ru_stime - before.ru_stime
            await asyncio.sleep(0.05)  # the receivers drain
    for transport in clients + accepted:
        transport.close()
    server.close()
    results = {}
    for name in paths:
        median = statistics.median(per_pass[name])
        user_share = user_s[name] / ((user_s[name] + kernel_s[name]) or 1)
        results[name] = {"us_per_frame": round(median, 2), "user_us": round(median * user_share, 2),
                         "kernel_us": round(median * (1 - user_share), 2)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=41)
    args = parser.parse_args()
    for name, cost in asyncio.run(measure(args.sockets, args.passes)).items():
        print(f"{name}: {cost['us_per_frame']} µs/frame (median of {args.passes} passes): "
              f"{cost['user_us']} in user space, {cost['kernel_us']} in the kernel")


if __name__ == "__main__":
    main()
