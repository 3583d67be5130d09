"""Routing readers to gateways by shard, and the partitions a gateway reads: pure rules."""
import pytest

from core.partitioning import murmur2
from core.routing import (
    PartitionInterest,
    home_of_shard,
    place_with_bounded_load,
    rendezvous_order,
    shard_of,
    shards_homed_at,
)

GATEWAYS = [f"gw-{i}" for i in range(10)]


def test_a_shard_is_the_partition_kafka_puts_the_article_in():
    for article in ("hello-claps", "a", "art9999", "x" * 64):
        assert shard_of(article, 12) == (murmur2(article.encode()) & 0x7FFFFFFF) % 12
    assert shard_of("anything", 1) == 0
    with pytest.raises(ValueError):
        shard_of("a", 0)


def test_rendezvous_order_is_a_deterministic_permutation():
    order = rendezvous_order("7", GATEWAYS)
    assert sorted(order) == sorted(GATEWAYS)
    assert rendezvous_order("7", list(reversed(GATEWAYS))) == order
    with pytest.raises(ValueError):
        rendezvous_order("7", [])
    with pytest.raises(ValueError):
        rendezvous_order("7", ["gw-0", "gw-0"])


def test_removing_a_gateway_moves_only_its_own_shards_each_to_its_next_choice():
    before = {s: rendezvous_order(str(s), GATEWAYS) for s in range(120)}
    survivors = [g for g in GATEWAYS if g != "gw-3"]
    for shard, order in before.items():
        after = home_of_shard(shard, survivors)
        if order[0] == "gw-3":
            assert after == order[1]
        else:
            assert after == order[0]


def test_adding_a_gateway_takes_shards_only_for_itself():
    grown = [*GATEWAYS, "gw-10"]
    for shard in range(120):
        after = home_of_shard(shard, grown)
        assert after in (home_of_shard(shard, GATEWAYS), "gw-10")


def test_each_gateway_is_home_to_its_share_of_many_shards():
    homed = {g: shards_homed_at(g, GATEWAYS, 120) for g in GATEWAYS}
    assert sorted(s for shards in homed.values() for s in shards) == list(range(120))  # a partition
    # 120 shards over 10 gateways: 12 each on average; hashing gives 7 to 18 here.
    assert all(7 <= len(shards) <= 18 for shards in homed.values()), {g: len(s) for g, s in homed.items()}
    with pytest.raises(ValueError):
        shards_homed_at("gw-x", GATEWAYS, 12)


def test_bounded_load_spills_a_hot_key_in_rendezvous_order_and_holds_everyone():
    demand = {"hot": 50_000, **{f"s{i}": 500 for i in range(100)}}  # 100,000 readers
    placement = place_with_bounded_load(demand, GATEWAYS, capacity=12_000)
    load = dict.fromkeys(GATEWAYS, 0)
    for key, spots in placement.items():
        assert sum(spots.values()) == demand[key]
        for gateway, readers in spots.items():
            load[gateway] += readers
    assert max(load.values()) <= 12_000
    assert sum(load.values()) == 100_000
    hot = placement["hot"]
    order = rendezvous_order("hot", GATEWAYS)
    # The hot key fills its first choices to the brim, in order: 4 full gateways and a fifth.
    assert list(hot) == order[:5]
    assert [hot[g] for g in order[:4]] == [12_000] * 4 and hot[order[4]] == 2_000


def test_bounded_load_refuses_demand_beyond_every_gateway():
    with pytest.raises(ValueError):
        place_with_bounded_load({"a": 101}, ["g1", "g2"], capacity=50)
    with pytest.raises(ValueError):
        place_with_bounded_load({"a": 1}, ["g1"], capacity=0)


def test_a_partition_is_needed_from_its_first_room_to_its_last():
    interest = PartitionInterest(12)
    a, b = "art1", next(f"art{i}" for i in range(2, 1000) if shard_of(f"art{i}", 12) == shard_of("art1", 12))
    other = next(f"art{i}" for i in range(2, 1000) if shard_of(f"art{i}", 12) != shard_of("art1", 12))
    p = shard_of(a, 12)
    assert interest.open(a) == p
    assert interest.open(b) is None  # same partition, already read
    assert interest.open(other) == shard_of(other, 12)
    assert interest.needed == {p, shard_of(other, 12)}
    assert interest.close(a) is None  # b still needs it
    assert interest.close(b) == p
    assert interest.needed == {shard_of(other, 12)}
    assert interest.follows(other) and not interest.follows(a)


def test_opening_or_closing_twice_changes_nothing():
    interest = PartitionInterest(12)
    p = interest.open("art1")
    assert interest.open("art1") is None
    assert interest.close("art1") == p
    assert interest.close("art1") is None
    assert interest.close("never-opened") is None
    assert interest.needed == frozenset()
    assert interest.open("art1") == p  # reopened: needed again
