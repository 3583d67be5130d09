"""The processor's persistent table store: Faust's RocksDB store, written changelog-first.

A restarted worker must be able to trust its local files, because it replays only the changelog
written after the offset they record. Faust's RocksDB store writes a value to disk at once and
sends it to the changelog afterwards; a worker killed in between restarts with a value that no
changelog holds. Its own re-read events then find every record already up to date and never
send it again, so the partition's next owner (or this worker, once its files are gone) restores
a state that lacks those claps while the clap offsets that carried them are committed.

This store keeps each write in memory until Kafka has acknowledged the changelog message that
carries it, then (every second) writes the acknowledged values and the changelog offset they
reach to RocksDB in one atomic batch per partition. Whatever a kill leaves on disk is a state
the changelog holds, and the recorded offset never runs ahead of the values, so a restart
replays the tail and lands on exactly the changelog's state. Events of a batch whose changelog
was not flushed were not committed either (Faust flushes the producer before it commits), and
are read again; ``core.ledger`` makes that harmless.

Keys are routed to partitions by ``core.partitioning`` (the article part of the key), the same
function that routes the table's changelog messages: Faust's own store would file a key under
the partition of whichever event happens to be current, which for a batch written back at once
is not the key's own.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import faust.stores
from faust.exceptions import PartitionsMismatch
import rocksdict
from faust.stores import rocksdb
from faust.types import TP
from mode import Service

from core.partitioning import PartitionCache
from processor.pending_writes import PartitionWrites

log = logging.getLogger("processor.state")

SCHEME = "clap-rocksdb"

# Faust's defaults size every partition's database for a large server (a 2 GiB block cache and
# 3 x 64 MiB write buffers each, with 2 tables x the partition count of databases per worker).
# The state is small records read by key: modest buffers are plenty.
ROCKSDB_OPTIONS: Mapping[str, int] = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 32 * 1024 * 1024,
}

# A test hook for the crash window this store closes: with this set to a path, the worker
# writes the path and exits at once (as kill -9 would leave it) right after the first batch it
# writes to its store, before the producer has flushed that batch's changelog messages.
CRASH_AFTER_LOCAL_WRITE_ENV = "PROCESSOR_TEST_CRASH_AFTER_LOCAL_WRITE"


class ChangelogFirstStore(rocksdb.Store):
    """Faust's RocksDB store, holding each write until Kafka has its changelog message."""

    #: How often acknowledged writes go to disk: about what a restart replays from the changelog.
    write_interval_s: float = 1.0

    def __init__(self, url: Any, app: Any, table: Any, *, options: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(url, app, table, options={**ROCKSDB_OPTIONS, **(options or {})}, **kwargs)
        self._writes: dict[int, PartitionWrites] = {}
        self._closing = False
        self._crash_marker = os.environ.get(CRASH_AFTER_LOCAL_WRITE_ENV)
        self._crash_scheduled = False
        self._partitions: PartitionCache | None = None

    def _partition_of(self, key: bytes) -> int:
        if self._partitions is None:
            self._partitions = PartitionCache(self.table.partitions or self.app.conf.topic_partitions)
        return self._partitions(key)

    # -- the store interface Faust's tables call

    def _get(self, key: bytes) -> bytes | None:
        partition = self._partition_of(key)
        writes = self._writes.get(partition)
        if writes is not None and key in writes.newest:
            return writes.newest[key]
        return self._db_for_partition(partition).get(key)

    def _set(self, key: bytes, value: bytes | None) -> None:
        # Its changelog message is being sent (processor.bulk_send, or Faust's Table.on_key_set).
        partition = self._partition_of(key)
        self._writes.setdefault(partition, PartitionWrites()).add(key, value)
        if self._crash_marker and not self._crash_scheduled:
            # This runs at the agent's first yield after the write: before Kafka has acknowledged
            # the batch's changelog messages.
            self._crash_scheduled = True
            asyncio.get_running_loop().call_soon(self._crash_for_test)

    # -- the same, for the agent's batched writes (processor.bulk_send), without Faust's
    #    per-key serializing, sensors and double lookups

    def get_encoded(self, key: bytes) -> bytes | None:
        return self._get(key)

    def put_encoded(self, key: bytes, value: bytes | None) -> None:
        """A write whose changelog message goes out in a record batch, in send order."""
        self._set(key, value)

    def _del(self, key: bytes) -> None:
        self._set(key, None)

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        # Faust calls this when Kafka acknowledges one of the table's changelog messages.
        writes = self._writes.get(tp.partition)
        if writes is not None:
            writes.ack(offset)

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        """Recovery and standby replication: these records are in Kafka already, so they go to
        disk at once, with the offset they reach, in one atomic batch per partition."""
        batches: dict[int, rocksdict.WriteBatch] = {}
        offsets: dict[int, int] = {}
        for event in batch:
            message = event.message
            write = batches.setdefault(message.partition, rocksdict.WriteBatch(raw_mode=True))
            if message.value is None:
                write.delete(message.key)
            else:
                write.put(message.key, message.value)
            offsets[message.partition] = max(message.offset, offsets.get(message.partition, -1))
        for partition, write in batches.items():
            write.put(self.offset_key, str(offsets[partition]).encode())
            self._db_for_partition(partition).write(write)

    # -- iteration, over the partitions this worker is active for

    def _active_partitions(self) -> Iterator[tuple[int, Any]]:
        actives = self.app.assignor.assigned_actives()
        topic = self.table.changelog_topic_name
        for partition, db in list(self._dbs.items()):
            if TP(topic, partition) in actives or self.table.is_global:
                yield partition, db

    def _iteritems(self) -> Iterator[tuple[bytes, bytes]]:
        for partition, db in self._active_partitions():
            writes = self._writes.get(partition)
            overlay = dict(writes.newest) if writes is not None else {}
            for key, value in self._visible_items(db):
                if key not in overlay:
                    yield key, value
            for key, value in overlay.items():
                if value is not None:
                    yield key, value

    def _iterkeys(self) -> Iterator[bytes]:
        for key, _ in self._iteritems():
            yield key

    def _itervalues(self) -> Iterator[bytes]:
        for _, value in self._iteritems():
            yield value

    def _size(self) -> int:
        return sum(1 for _ in self._iteritems())

    # -- acknowledged writes to disk

    @Service.task
    async def _write_behind(self) -> None:
        async for _ in self.itertimer(self.write_interval_s, name="changelog-first-write"):
            if self._closing:
                break
            self.write_acknowledged()

    def write_acknowledged(self) -> None:
        """Write every acknowledged value, and the offset it reaches, to disk: one atomic batch
        per partition, so the recorded offset never runs ahead of the values."""
        for partition, writes in list(self._writes.items()):
            db = self._dbs.get(partition)
            if db is None:
                continue
            acked, offset = writes.take_acked()
            if offset is None:
                continue
            write = rocksdict.WriteBatch(raw_mode=True)
            for key, value in acked.items():
                if value is None:
                    write.delete(key)
                else:
                    write.put(key, value)
            write.put(self.offset_key, str(offset).encode())
            db.write(write)
            if not writes:
                del self._writes[partition]

    async def assign_partitions(self, table: Any, tps: Any, generation_id: int = 0) -> None:
        self._check_changelog_partitions()
        await super().assign_partitions(table, tps, generation_id)

    def _check_changelog_partitions(self) -> None:
        """Refuse to run on a changelog whose partition count differs from the table's: keys
        would be filed under one partition here and replayed from another."""
        topic = self.table.changelog_topic_name
        found = self.app.consumer.topic_partitions(topic)
        wanted = self.table.partitions or self.app.conf.topic_partitions
        if found is not None and found != wanted:
            raise PartitionsMismatch(
                f"changelog topic {topic} has {found} partitions, the clap topic {wanted}: it was probably"
                " auto-created by the broker. Create the topics with `python -m processor.topics` (same"
                " environment) before the first worker starts, after deleting this one."
            )

    def revoke_partitions(self, table: Any, tps: Any) -> None:
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                # Dropping is safe: the disk keeps an older state with a matching offset.
                self._writes.pop(tp.partition, None)
        super().revoke_partitions(table, tps)

    async def stop(self) -> None:
        # Faust's RocksDB store replaces Service.stop, so the write-behind task is told here.
        # Faust flushed its producer before stopping the tables: every write is acknowledged.
        self._closing = True
        self.write_acknowledged()
        await super().stop()

    def _crash_for_test(self) -> None:
        with open(self._crash_marker, "w") as marker:
            marker.write(f"{self.table.name}: exited after a local write, before the changelog flush\n")
        os._exit(70)


def faust_store_url(store: str) -> str:
    """The Faust store URL for a PROCESSOR_STORE value, making the scheme known to Faust."""
    if store == "memory":
        return "memory://"
    faust.stores.STORES.aliases.setdefault(SCHEME, f"{__name__}:{ChangelogFirstStore.__name__}")
    return f"{SCHEME}://"


def worker_state_dir(path: str) -> str:
    """The worker's state directory (Faust's datadir), its parents made: Faust makes only the
    last level."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path
