"""Which log partition an article, or a state key that starts with an article id, belongs to.

Kafka's default partitioner hashes the whole key with murmur2. State keys such as
``article:user`` must land in the same partition as the article's claps, so the processor and
the gateways hash only the part before the separator; for a bare article id this is exactly the
default partitioner, so other Kafka clients agree on where an article lives.
"""
from __future__ import annotations

from core.processing import KEY_SEPARATOR

_SEPARATOR = KEY_SEPARATOR.encode()


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's ``Utils.murmur2``), as an unsigned 32-bit int."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = (data[i4] & 0xFF) + ((data[i4 + 1] & 0xFF) << 8) + ((data[i4 + 2] & 0xFF) << 16) + ((data[i4 + 3] & 0xFF) << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    index = length & ~3
    if extra >= 3:
        h ^= (data[index + 2] & 0xFF) << 16
    if extra >= 2:
        h ^= (data[index + 1] & 0xFF) << 8
    if extra >= 1:
        h ^= data[index] & 0xFF
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition of a key: the murmur2 of its article part, positive, modulo ``partitions``."""
    article = key.split(_SEPARATOR, 1)[0]
    return (murmur2(article) & 0x7FFFFFFF) % partitions


def article_partitioner(key: bytes, all_partitions: list[int], available: list[int]) -> int:
    """A Kafka client partitioner (aiokafka's signature) that routes by the article part of a key."""
    return all_partitions[partition_for_key(key, len(all_partitions))]


class PartitionCache:
    """Partition per article prefix of a key, remembered: the murmur2 hash is pure Python."""

    __slots__ = ("partitions", "known", "limit")

    def __init__(self, partitions: int, limit: int = 100_000) -> None:
        self.partitions, self.known, self.limit = partitions, {}, limit

    def __call__(self, key: bytes) -> int:
        article = key.split(_SEPARATOR, 1)[0]
        partition = self.known.get(article)
        if partition is None:
            if len(self.known) >= self.limit:
                self.known.clear()  # bounded: an article's partition is cheap to compute again
            partition = self.known[article] = partition_for_key(key, self.partitions)
        return partition


class CachedPartitioner:
    """``article_partitioner`` with each article's partition remembered: a Kafka client calls its
    partitioner for every record, and the hash is pure Python (3.6 % of a gateway's samples while
    it appended 2,000 claps/s, docs/BENCHMARKS.md §4.5). One per producer."""

    __slots__ = ("caches",)

    def __init__(self) -> None:
        self.caches: dict[int, PartitionCache] = {}

    def __call__(self, key: bytes, all_partitions: list[int], available: list[int]) -> int:
        cache = self.caches.get(len(all_partitions))
        if cache is None:
            cache = self.caches[len(all_partitions)] = PartitionCache(len(all_partitions))
        return all_partitions[cache(key)]
