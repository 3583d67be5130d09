from hypothesis import given, settings
from hypothesis import strategies as st

from core.ledger import MAX_CLAPS_PER_USER, ArticleTally, UserClaps, apply_clap


def clap_sequence(user, article, claps, start_offset=0):
    counted = []
    for i, (clap_id, count) in enumerate(claps):
        applied = apply_clap(user, article, clap_id, count, start_offset + i)
        user, article = applied.user, applied.article
        counted.append(applied.counted)
    return user, article, counted


def test_cap_at_49_50_51():
    user, article, counted = clap_sequence(UserClaps(), ArticleTally(), [("a", 49)])
    assert (user.total, article.total, counted) == (49, 49, [49])
    user, article, counted = clap_sequence(user, article, [("b", 1)], start_offset=1)
    assert (user.total, article.total, counted) == (50, 50, [1])
    user, article, counted = clap_sequence(user, article, [("c", 1)], start_offset=2)
    assert (user.total, article.total, counted) == (50, 50, [0])


def test_a_batch_crossing_the_cap_counts_only_up_to_it():
    user, article, counted = clap_sequence(UserClaps(), ArticleTally(), [("a", 45), ("b", 10)])
    assert counted == [45, 5]
    assert article.total == MAX_CLAPS_PER_USER


def test_duplicate_clap_id_counts_once():
    user, article, counted = clap_sequence(UserClaps(), ArticleTally(), [("same", 3), ("same", 3), ("other", 2)])
    assert counted == [3, 0, 2]
    assert article.total == 5


def test_replaying_an_offset_counts_nothing_again_and_asks_for_an_announcement():
    first = apply_clap(UserClaps(), ArticleTally(), "x", 4, offset=7)
    again = apply_clap(first.user, first.article, "x", 4, offset=7)
    assert again.article == first.article
    assert again.replayed and again.counted == 4


def test_crash_between_user_and_article_writes_recovers_the_count():
    # The user record was saved after offset 7 but the article record was not.
    first = apply_clap(UserClaps(), ArticleTally(), "x", 4, offset=7)
    recovered = apply_clap(first.user, ArticleTally(), "x", 4, offset=7)
    assert recovered.article.total == 4
    assert not recovered.replayed


def test_crash_after_article_but_before_user_write_recovers_the_user():
    first = apply_clap(UserClaps(), ArticleTally(), "x", 4, offset=7)
    recovered = apply_clap(UserClaps(), first.article, "x", 4, offset=7)
    assert recovered.user.total == 4
    assert recovered.article.total == 4


events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.integers(1, 50)), min_size=1, max_size=30
)


@settings(max_examples=300, deadline=None)
@given(events=events, data=st.data())
def test_any_crash_and_replay_pattern_ends_at_the_once_only_result(events, data):
    """At-least-once delivery: re-reading any suffix, with either record stale, changes nothing."""
    expected_user, expected_article, _ = clap_sequence(UserClaps(), ArticleTally(), events)

    # Snapshots of each record after every offset, as a crash could leave them.
    users, articles = [UserClaps()], [ArticleTally()]
    for offset, (clap_id, count) in enumerate(events):
        applied = apply_clap(users[-1], articles[-1], clap_id, count, offset)
        users.append(applied.user)
        articles.append(applied.article)

    # A crash leaves each record at its own point; processing restarts at the older one.
    user_at = data.draw(st.integers(0, len(events)))
    article_at = data.draw(st.integers(0, len(events)))
    user, article = users[user_at], articles[article_at]
    for offset in range(min(user_at, article_at), len(events)):
        clap_id, count = events[offset]
        applied = apply_clap(user, article, clap_id, count, offset)
        user, article = applied.user, applied.article

    assert article.total == expected_article.total == user.total
    assert user == expected_user
    assert user.total <= MAX_CLAPS_PER_USER
    assert len(user.accepted) <= MAX_CLAPS_PER_USER


def test_records_round_trip_through_dicts():
    user = UserClaps(3, 9, (("a", 9, 3),))
    assert UserClaps.from_dict(user.to_dict()) == user
    tally = ArticleTally(5, 9)
    assert ArticleTally.from_dict(tally.to_dict()) == tally
