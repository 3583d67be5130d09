from core.ledger import ArticleTally, UserClaps
from core.messages import ClapRecorded, CountChanged, is_newer
from core.processing import ClapProcessor, user_key
from core.window import WindowCoalescer


def clap(article="a", user="u", count=1, clap_id="c", at_ms=0):
    return ClapRecorded(article, user, count, clap_id, at_ms)


def test_window_is_due_exactly_at_its_edge():
    windows = WindowCoalescer(100)
    windows.add("a", 2, at_ms=5, now_ms=1000)
    assert windows.due(1099) == []
    assert windows.due(1100) == [("a", 2, 5)]
    assert windows.due(1200) == []


def test_claps_inside_one_window_ride_along():
    windows = WindowCoalescer(100)
    windows.add("a", 1, at_ms=1, now_ms=0)
    windows.add("a", 3, at_ms=9, now_ms=99)
    windows.add("b", 1, at_ms=2, now_ms=50)
    assert windows.due(100) == [("a", 4, 9)]
    assert windows.due(149) == []
    assert windows.due(150) == [("b", 1, 2)]


def test_force_closes_every_window():
    windows = WindowCoalescer(100)
    windows.add("a", 1, at_ms=0, now_ms=0)
    assert windows.due(1, force=True) == [("a", 1, 0)]
    assert len(windows) == 0


def make_processor(window_ms=100, epoch=1):
    users: dict[str, UserClaps] = {}
    articles: dict[str, ArticleTally] = {}
    return ClapProcessor(users, articles, window_ms=window_ms, epoch=epoch), users, articles


def test_one_numbered_total_per_article_per_window():
    processor, _, articles = make_processor()
    processor.apply(clap(user="u1", clap_id="1", count=2), offset=0, now_ms=0)
    processor.apply(clap(user="u2", clap_id="2", count=3), offset=1, now_ms=10)
    processor.apply(clap(article="b", user="u1", clap_id="3"), offset=0, now_ms=20)
    assert processor.flush(50) == []
    assert processor.flush(100) == [CountChanged("a", 5, 5, 1, 1, 0)]
    assert processor.flush(120) == [CountChanged("b", 1, 1, 1, 1, 0)]
    assert articles["a"].seq == 1


def test_sequence_strictly_grows_and_totals_never_shrink():
    processor, _, _ = make_processor(window_ms=0)
    seen, last_total, emitted = None, 0, 0
    for offset in range(200):
        processor.apply(clap(user=f"u{offset % 7}", clap_id=str(offset), count=offset % 5 + 1), offset, offset)
        for update in processor.flush(offset):
            assert is_newer(update.position(), seen)
            assert update.total == last_total + update.delta
            seen, last_total, emitted = update.position(), update.total, emitted + 1
    assert seen == (1, emitted)
    assert last_total == 7 * 50  # seven users, each capped at 50


def test_capped_or_duplicate_claps_announce_nothing():
    processor, users, _ = make_processor(window_ms=0)
    processor.apply(clap(count=50, clap_id="a"), 0, 0)
    assert processor.flush(0)[0].total == 50
    processor.apply(clap(count=1, clap_id="b"), 1, 1)  # over the cap
    processor.apply(clap(count=50, clap_id="a"), 2, 2)  # a retry
    assert processor.flush(2) == []
    assert users[user_key("a", "u")].total == 50


def test_a_replayed_event_is_announced_again_without_counting():
    processor, _, _ = make_processor(window_ms=0)
    processor.apply(clap(count=2), 0, 0)
    [first] = processor.flush(0)
    processor.apply(clap(count=2), 0, 5)  # the same offset, re-read after a crash
    [again] = processor.flush(5)
    assert (again.total, again.delta) == (first.total, 0)
    assert again.seq > first.seq


def test_epoch_outranks_any_sequence_of_the_epoch_before():
    assert is_newer((2, 1), (1, 10**9))
    assert not is_newer((1, 5), (1, 5))
    assert is_newer((0, 0), None)


def test_catch_up_holds_back_then_announces_once():
    from core.processing import CatchUp

    catch_up = CatchUp(max_lag=100)
    assert catch_up.after_batch(5) == CatchUp.FLUSH
    assert catch_up.after_batch(5000) == CatchUp.HOLD
    assert catch_up.after_batch(101) == CatchUp.HOLD
    assert catch_up.after_batch(100) == CatchUp.ANNOUNCE_ALL
    assert catch_up.after_batch(0) == CatchUp.FLUSH


def test_announce_all_numbers_every_article_once_without_delta():
    processor, _, _ = make_processor(window_ms=1000)
    for offset, article in enumerate(["a", "b", "c"]):
        processor.apply(clap(article=article, clap_id=str(offset), count=offset + 1), offset, 0)
    processor.flush(2000)
    processor.apply(clap(article="a", user="v", clap_id="x", count=2), 3, 2001)
    updates = {u.article: u for u in processor.announce_all(2002)}
    assert {a: (u.total, u.seq) for a, u in updates.items()} == {"a": (3, 2), "b": (2, 2), "c": (3, 2)}


def test_catch_up_keeps_holding_while_the_lag_is_unknown_or_events_are_waiting():
    from core.processing import CatchUp

    catch_up = CatchUp(max_lag=10)
    assert catch_up.after_batch(None) == CatchUp.FLUSH  # not rebuilding: unknown lag is no reason to wait
    assert catch_up.after_batch(50) == CatchUp.HOLD
    assert catch_up.after_batch(None) == CatchUp.HOLD
    assert catch_up.after_batch(0, batch_was_full=True) == CatchUp.HOLD
    assert catch_up.after_batch(0) == CatchUp.ANNOUNCE_ALL
