"""Percentiles, article assignment and the acks-versus-totals arithmetic."""
from __future__ import annotations

import random
from collections import Counter

from loadtest.analysis import check_totals, per_reader_rates
from loadtest.articles import ArticleMix
from loadtest.clappers import Ledger, Session
from loadtest.stats import bucket_of, bucket_value_us, percentiles_ms, seconds_within


def test_buckets_are_within_a_few_percent() -> None:
    for value in (1.5, 10, 999, 123_456, 9_999_999):
        assert abs(bucket_value_us(bucket_of(value)) - value) / value < 0.025


def test_percentiles_of_a_known_distribution() -> None:
    histogram: dict[int, int] = {}
    for ms in range(1, 1001):  # 1..1000 ms, once each
        bucket = bucket_of(ms * 1000)
        histogram[bucket] = histogram.get(bucket, 0) + 1
    result = percentiles_ms(histogram)
    assert abs(result["p50"] - 500) / 500 < 0.03
    assert abs(result["p99"] - 990) / 990 < 0.03
    assert result["count"] == 1000


def test_whole_seconds_only() -> None:
    assert seconds_within({10: 5, 11: 7, 12: 9, 13: 1}, 10.5, 13.2) == [7, 9]


def test_article_mix_is_deterministic_and_covers() -> None:
    mix = ArticleMix("p", 100, hot_share=0.2, cover_all=True, seed=3)
    assert [mix.article_for(i) for i in range(100)] == [f"p-{i}" for i in range(100)]
    counts = Counter(mix.article_index_for(i) for i in range(100, 20_100))
    assert 0.17 < counts[0] / 20_000 < 0.23  # the hot one
    assert counts[1] > counts[50] > 0  # a Zipf tail
    assert ArticleMix("p", 100, 0.2, seed=3).article_for(12345) == mix.article_for(12345)
    assert ArticleMix("q").pick(random.Random(1)) == "q-0"


class _FakeWs:
    pass


def test_cap_and_unanswered_bounds() -> None:
    ledger = Ledger()
    session = Session(_FakeWs(), ledger, "s")  # type: ignore[arg-type]
    session.acked["a"] = 60  # an overclapper: only 50 can count
    session.acked["b"] = 20
    session.pending["x"] = type("Sent", (), {"article": "b", "count": 40, "at": 0.0})()
    session.close_books()
    assert ledger.acked_capped == Counter({"a": 50, "b": 20})
    assert ledger.upper_capped == Counter({"a": 50, "b": 50})
    ledger.tapped.update({"a": 60, "b": 60})
    result = check_totals(ledger, {"a": 50, "b": 35}, {})
    assert (result["exact"], result["within_unanswered"], result["mismatched"]) == (1, 1, 0)
    assert check_totals(ledger, {"a": 51, "b": 20}, {})["mismatched"] == 1


def test_per_reader_rates_between_marks() -> None:
    results = [{"marks": [("start", 100.0, [0, 5]), ("end", 110.0, [100, 5])]}]
    assert per_reader_rates(results) == [10.0, 0.0]
