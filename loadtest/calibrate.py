"""The speed of light for fan-out on this machine: plain ``socket.send`` of one small frame per socket.

No websockets, no asyncio: one process writes a 114-byte frame to each of N loopback TCP
sockets per round, another reads them with epoll. The CPU each side spends per frame is what any
Python server pays at least to fan a frame out here, so ``1e6 / sender_us_per_frame`` frames per
second is the ceiling of one core. On a VM syscalls and loopback delivery can cost several
times what they do on bare metal, which is why the number belongs next to every fan-out result.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import resource
import select
import socket
import time
from typing import Any

from loadtest.reader_loop import IP_BIND_ADDRESS_NO_PORT

FRAME = b"\x81\x70" + b"x" * 112  # an unmasked text frame the size of a count message


def _cpu_s() -> tuple[float, float]:
    """This thread's CPU: the sender may run in a thread of a busier process."""
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime, usage.ru_stime


def _receiver(pipe: multiprocessing.connection.Connection, port: int, connections: int, lifetime_s: float) -> None:
    socks = []
    for i in range(connections):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((f"127.0.0.{2 + i % 8}", 0))
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
    by_fd = {s.fileno(): s for s in socks}
    epoll = select.epoll()
    for fd in by_fd:
        epoll.register(fd, select.EPOLLIN)
    pipe.send("connected")
    start = _cpu_s()
    received = 0
    open_count = len(socks)
    deadline = time.monotonic() + lifetime_s
    while open_count and time.monotonic() < deadline:
        for fd, _ in epoll.poll(0.5):
            data = by_fd[fd].recv(65536)
            if data:
                received += len(data)
            else:
                epoll.unregister(fd)
                open_count -= 1
    end = _cpu_s()
    pipe.send({"bytes": received, "user_s": end[0] - start[0], "sys_s": end[1] - start[1]})


def calibrate(connections: int = 2000, rounds: int = 20, pause_s: float = 0.05) -> dict[str, Any]:
    """Send ``rounds`` frames to each of ``connections`` sockets; CPU per frame on each side."""
    server = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = server.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_receiver, args=(child, port, connections, 120.0), daemon=True)
    process.start()
    try:
        accepted = [server.accept()[0] for _ in range(connections)]
        if not parent.poll(60) or parent.recv() != "connected":
            raise RuntimeError("calibration receiver did not connect")
        for sock in accepted:
            sock.setblocking(False)
        before, wall = _cpu_s(), time.perf_counter()
        busy = 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            for sock in accepted:
                sock.send(FRAME)
            busy += time.perf_counter() - started
            time.sleep(pause_s)  # let the receiver drain, as between real updates
        after = _cpu_s()
        for sock in accepted:
            sock.close()
        received = parent.recv() if parent.poll(60) else {}
    finally:
        process.join(10)
        if process.is_alive():
            process.terminate()  # our own child, by its handle
        server.close()
    frames = connections * rounds
    sender_us = ((after[0] - before[0]) + (after[1] - before[1])) / frames * 1e6
    receiver_us = (received.get("user_s", 0) + received.get("sys_s", 0)) / frames * 1e6 if received else None
    return {
        "connections": connections,
        "frames": frames,
        "sender_cpu_us_per_frame": round(sender_us, 2),
        "sender_sys_share": round((after[1] - before[1]) / max(1e-9, (after[0] - before[0]) + (after[1] - before[1])), 3),
        "sender_wall_us_per_frame": round(busy / frames * 1e6, 2),
        "receiver_cpu_us_per_frame": None if receiver_us is None else round(receiver_us, 2),
        "frames_received": received.get("bytes", 0) // len(FRAME),
        "ceiling_frames_per_s_one_core": round(1e6 / sender_us) if sender_us else None,
        "wall_s": round(time.perf_counter() - wall, 2),
    }
