"""The writes a partition's store holds in memory until Kafka has their changelog messages.

Plain data, no I/O: ``processor.state_store`` feeds it writes and acknowledgements, and writes
what it hands back to disk.
"""
from __future__ import annotations

from collections import deque


class PartitionWrites:
    """One partition's writes that are not on disk yet, in the order their changelog messages
    were sent. Plain data: the store feeds it writes and acknowledgements."""

    def __init__(self) -> None:
        self.unacked: deque[tuple[bytes, bytes | None]] = deque()
        self.acked: dict[bytes, bytes | None] = {}  # newest acknowledged value per key
        self.acked_writes: dict[bytes, int] = {}  # how many acknowledged writes per key
        self.acked_offset: int | None = None  # the changelog offset the acknowledged writes reach
        self.newest: dict[bytes, bytes | None] = {}  # what a read sees: newest write, on disk or not
        self.in_memory: dict[bytes, int] = {}  # per key, writes not yet on disk

    def add(self, key: bytes, value: bytes | None) -> None:
        self.unacked.append((key, value))
        self.newest[key] = value
        self.in_memory[key] = self.in_memory.get(key, 0) + 1

    def ack(self, offset: int) -> None:
        """The oldest unacknowledged write's changelog message is in Kafka at ``offset``.

        Kafka acknowledges one partition's messages in the order they were sent (the client
        keeps one request per partition in flight, and the producer is idempotent).
        """
        if not self.unacked:
            return  # sent before this partition was last revoked: its value was dropped
        key, value = self.unacked.popleft()
        self.acked[key] = value
        self.acked_writes[key] = self.acked_writes.get(key, 0) + 1
        if self.acked_offset is None or offset > self.acked_offset:
            self.acked_offset = offset

    def take_acked(self) -> tuple[dict[bytes, bytes | None], int | None]:
        """The acknowledged writes and the offset they reach; the caller writes them to disk."""
        acked, offset = self.acked, self.acked_offset
        for key, writes in self.acked_writes.items():
            left = self.in_memory[key] - writes
            if left:
                self.in_memory[key] = left
            else:  # the disk now holds the newest value
                del self.in_memory[key]
                del self.newest[key]
        self.acked, self.acked_writes, self.acked_offset = {}, {}, None
        return acked, offset

    def __bool__(self) -> bool:
        return bool(self.unacked or self.acked or self.acked_offset is not None)
