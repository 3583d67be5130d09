"""Which gateway a reader goes to, and which fan-out partitions a gateway must read.

Every gateway used to read every total on the fan-out topic and drop those of articles it has
no reader of. The cost of that grows with gateways × totals (docs/DESIGN.md §7.3). Two rules
here remove it, and neither needs the other to be correct:

- A gateway reads only the fan-out partitions that hold at least one of its rooms
  (``PartitionInterest``). That is correct for any routing of readers: a room's totals are all
  in its article's partition.
- Readers are routed by the article's fan-out partition (its *shard*), so the rooms of one
  gateway fall into few partitions and the first rule pays off. The load balancer does the
  routing with consistent hashing of the shard; ``rendezvous_order`` is the same idea as a pure
  function (highest random weight), used by the benchmark and the tests to place rooms, and
  ``place_with_bounded_load`` models the bounded-load variant a balancer uses so that one hot
  article spills over to the next gateways instead of overflowing its first one.

Pure: no I/O, no clock.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from core.partitioning import partition_for_key


def shard_of(article: str, partitions: int) -> int:
    """The article's partition on a topic of ``partitions`` partitions keyed by article id.

    The processor publishes totals with this partitioner (Kafka's murmur2 of the article id),
    so this is where a gateway finds the article's totals, and the routing key a page puts in
    its websocket URL (``/ws?shard=N``) for the load balancer to hash.
    """
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    return partition_for_key(article.encode(), partitions)


def _weight(gateway: str, key: str) -> int:
    # Any stable, well-mixed hash of the pair will do; blake2b is in the standard library and
    # the same on every platform and Python version (unlike hash()).
    return int.from_bytes(hashlib.blake2b(f"{gateway}\x1f{key}".encode(), digest_size=8).digest(), "big")


def rendezvous_order(key: str, gateways: Sequence[str]) -> list[str]:
    """The gateways in the order ``key`` prefers them (highest random weight first).

    The first is the key's home. Removing a gateway moves only the keys whose home it was, each
    to its next choice; adding one takes over only the keys that now rank it first. Ties are
    broken by name so the order is total.
    """
    if not gateways:
        raise ValueError("no gateways to route to")
    if len(set(gateways)) != len(gateways):
        raise ValueError(f"gateway names must be unique: {sorted(gateways)}")
    return sorted(gateways, key=lambda g: (_weight(g, key), g), reverse=True)


def home_of_shard(shard: int, gateways: Sequence[str]) -> str:
    return rendezvous_order(str(shard), gateways)[0]


def shards_homed_at(gateway: str, gateways: Sequence[str], partitions: int) -> frozenset[int]:
    """The shards (fan-out partitions) whose home is ``gateway``: what it reads when no room spills."""
    if gateway not in gateways:
        raise ValueError(f"{gateway!r} is not one of the gateways")
    return frozenset(s for s in range(partitions) if home_of_shard(s, gateways) == gateway)


def place_with_bounded_load(
    demand: Mapping[str, int], gateways: Sequence[str], capacity: int
) -> dict[str, dict[str, int]]:
    """Place each key's readers on its gateways in rendezvous order, none above ``capacity``.

    ``demand`` is readers per routing key. A key's readers fill its home gateway up to the
    capacity, then spill to its next choice, and so on: consistent hashing with bounded loads,
    as a load balancer does it (HAProxy ``hash-balance-factor``, Envoy ``hash_balance_factor``),
    reduced to a deterministic function of the demand. Keys are placed largest first, so a hot
    article takes the room it needs before the long tail fills the gateways. Returns key ->
    gateway -> readers; raises if the gateways cannot hold the demand.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be positive, not {capacity}")
    total = sum(demand.values())
    if total > capacity * len(gateways):
        raise ValueError(f"{total} readers do not fit on {len(gateways)} gateways of {capacity}")
    load = dict.fromkeys(gateways, 0)
    placement: dict[str, dict[str, int]] = {}
    for key in sorted(demand, key=lambda k: (-demand[k], k)):
        left = demand[key]
        if left < 0:
            raise ValueError(f"negative demand for {key!r}")
        spots = placement[key] = {}
        for gateway in rendezvous_order(key, gateways):
            if not left:
                break
            taken = min(left, capacity - load[gateway])
            if taken:
                spots[gateway] = taken
                load[gateway] += taken
                left -= taken
    return placement


class PartitionInterest:
    """The fan-out partitions a gateway must read: those holding at least one of its rooms.

    Fed the rooms as they open and close; answers which partition starts or stops being needed.
    Opening or closing the same article twice changes nothing, so a caller need not track it.
    """

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"a topic has at least one partition, not {partitions}")
        self.partitions = partitions
        self._shard: dict[str, int] = {}
        self._rooms_in: dict[int, int] = {}

    def open(self, article: str) -> int | None:
        """A room opened; returns its partition if no other room needed it yet."""
        if article in self._shard:
            return None
        shard = self._shard[article] = shard_of(article, self.partitions)
        self._rooms_in[shard] = self._rooms_in.get(shard, 0) + 1
        return shard if self._rooms_in[shard] == 1 else None

    def close(self, article: str) -> int | None:
        """A room closed; returns its partition if it was the partition's last room."""
        shard = self._shard.pop(article, None)
        if shard is None:
            return None
        self._rooms_in[shard] -= 1
        if self._rooms_in[shard]:
            return None
        del self._rooms_in[shard]
        return shard

    def follows(self, article: str) -> bool:
        return article in self._shard

    @property
    def needed(self) -> frozenset[int]:
        return frozenset(self._rooms_in)
