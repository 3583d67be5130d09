"""Percentiles, article assignment and the acks-versus-totals arithmetic."""
from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from loadtest.analysis import check_totals, per_reader_rates, settled_at, totals_agree
from loadtest.articles import ArticleMix
from loadtest.clappers import Clapper, ClapPlan, Ledger, Session
from loadtest.plans import Target
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


def test_clappers_together_offer_exactly_the_planned_rate() -> None:
    target = Target("127.0.0.1", 1)
    for rate, click_rate in ((5000.0, 10.0), (1000.0, 8.0), (37.0, 20.0)):
        plan = ClapPlan((target,), ArticleMix("r"), rate=rate, duration_s=1.0, click_rate=click_rate)
        rates = [plan.click_rate_of(i) for i in range(plan.clappers)]
        assert abs(sum(rates) - rate) < 1e-6
        assert min(rates) >= 0.5 * click_rate * 0.9 and max(rates) <= 1.5 * click_rate * 1.1  # still jittered
        assert len(set(rates)) == len(rates)


async def test_a_clapper_makes_up_the_taps_missed_between_articles() -> None:
    """Time spent between articles (a new session's connect) is owed and sent, not lost."""
    plan = ClapPlan((Target("127.0.0.1", 1),), ArticleMix("r"), rate=40.0, duration_s=10.0, click_rate=40.0,
                    one_per_message=True, taps_per_article=12, overclap_share=0.0)
    clapper = Clapper(plan, 0, Ledger(), end_at=time.time() + 10.0)
    sent: list[float] = []

    class Recorder:
        async def clap(self, article: str, count: int) -> None:
            sent.append(time.time())

    clapper.owed_since = began = time.time()
    await clapper._tap_article(Recorder(), "a")  # type: ignore[arg-type]
    await asyncio.sleep(0.3)  # about 12 taps' time with nothing sent
    await clapper._tap_article(Recorder(), "b")  # type: ignore[arg-type]
    assert len(sent) == 24
    owed_by_the_clock = (sent[-1] - began) * plan.click_rate_of(0)
    assert owed_by_the_clock - 1 <= len(sent) + clapper.owed <= owed_by_the_clock + 1e-6


def test_the_totals_settled_when_the_first_read_saw_the_final_ones() -> None:
    polls = [(10.0, {"a": 1}, False), (10.1, {"a": 5}, False), (10.2, {"a": 7}, True),
             (10.3, {"a": 7}, False), (10.4, {"a": 7}, False)]
    assert settled_at(polls) == 10.3  # 10.2 had the totals but a reader was still behind
    assert settled_at(polls[:2]) == 10.1
    assert settled_at(polls[:3]) is None  # the newest read still has a reader behind
    assert settled_at([]) is None
    assert settled_at([(1.0, {"a": 3}, False), (1.1, {"a": 4}, False), (1.2, {"a": 3}, False)]) == 1.2


def test_totals_agree_only_when_every_read_is_within_what_the_acks_allow() -> None:
    ledger = Ledger()
    ledger.acked_capped.update({"a": 50, "b": 20})
    ledger.upper_capped.update({"a": 50, "b": 30})
    assert totals_agree(ledger, {(0, "a"): 60, (0, "b"): 45, (1, "a"): 60}, {"a": 10, "b": 20})
    assert not totals_agree(ledger, {(0, "a"): 60, (1, "a"): 59}, {"a": 10})  # one gateway behind
    assert not totals_agree(ledger, {(0, "b"): 51}, {})  # more than acked plus unanswered
    assert not totals_agree(ledger, {(0, "a"): -1}, {"a": -51})  # that target did not answer
    assert totals_agree(ledger, {(0, "c"): 7}, {"c": 7})  # not clapped: unchanged
