import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from core.identity import issue_token, verify_token
from core.partitioning import CachedPartitioner, PartitionCache, article_partitioner, murmur2, partition_for_key
from core.ratelimit import TokenBucket

SECRET = b"test-secret"


@given(st.binary(max_size=80))
def test_murmur2_matches_kafka_clients(data):
    assert murmur2(data) == aiokafka_murmur2(data)


def test_state_keys_share_the_partition_of_their_article():
    for article in ["a", "why-logs-win", "x" * 64]:
        assert partition_for_key(f"{article}:u123".encode(), 12) == partition_for_key(article.encode(), 12)


def test_bare_article_keys_use_the_default_kafka_partitioning():
    key = b"hello-claps"
    assert partition_for_key(key, 12) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 12


def test_tokens_verify_and_forgeries_do_not():
    token = issue_token(SECRET, "alice")
    assert verify_token(SECRET, token) == "alice"
    user, _, signature = token.partition(".")
    assert verify_token(SECRET, f"mallory.{signature}") is None
    assert verify_token(b"other-secret", token) is None
    assert verify_token(SECRET, None) is None
    assert verify_token(SECRET, "no-dot") is None
    with pytest.raises(ValueError):
        issue_token(SECRET, "not valid!")


def test_token_bucket_allows_bursts_then_the_rate():
    bucket = TokenBucket(rate=10, burst=3, now_ms=0)
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(99) is False
    assert bucket.take(100) is True


def test_the_partition_cache_agrees_with_the_hash_and_stays_bounded():
    cache = PartitionCache(12, limit=3)
    keys = [f"art{i}:u{j}".encode() for i in range(10) for j in range(3)] + [b"art1", b"plain"]
    for key in keys + keys:
        assert cache(key) == partition_for_key(key, 12)
    assert len(cache.known) <= 3


def test_the_cached_partitioner_is_the_partitioner_for_any_partition_list():
    cached = CachedPartitioner()
    keys = [f"art{i}:u{j}".encode() for i in range(20) for j in range(3)] + [b"art1", b"plain"]
    for partitions in ([0, 1, 2], list(range(12)), [5, 7, 9, 11], list(range(12))):
        for key in keys + keys:
            assert cached(key, partitions, partitions) == article_partitioner(key, partitions, partitions)
    assert sorted(cached.caches) == [3, 4, 12]
