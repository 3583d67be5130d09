"""The follower of the fan-out topic: newest total by position, and when the totals were final."""
from core.messages import CountChanged
from loadtest.live_totals import LiveTotals, summary


def test_totals_are_final_when_the_last_article_reached_its_final_total():
    live = LiveTotals()
    live.see(CountChanged("a", 3, 3, 10, 1, 0), at=100.0)
    live.see(CountChanged("b", 1, 1, 4, 1, 0), at=100.5)
    live.see(CountChanged("a", 7, 4, 20, 1, 0), at=101.0)
    live.see(CountChanged("a", 3, 3, 10, 1, 0), at=101.5)  # an older announcement read late: ignored
    live.see(CountChanged("a", 7, 0, 25, 1, 0), at=102.0)  # a newer position, same total: no change
    assert live.settled_at({"a": 7, "b": 1}) == (101.0, [])
    assert summary(live, {"a": 7, "b": 1}, end=100.2) == {"settle_seconds_after_end": 0.8, "articles_not_final": 0}


def test_articles_short_of_their_final_total_or_never_announced_are_named():
    live = LiveTotals()
    live.see(CountChanged("a", 3, 3, 10, 1, 0), at=100.0)
    assert live.settled_at({"a": 5, "c": 1}) == (None, ["a", "c"])
    assert summary(live, {"a": 5, "c": 1}, end=99.0) == {"settle_seconds_after_end": None, "articles_not_final": 2}
