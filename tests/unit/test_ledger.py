from hypothesis import given, settings
from hypothesis import strategies as st

from core.ledger import MAX_CLAPS_PER_USER, MAX_UNDOS_PER_USER, ArticleTally, UserClaps, apply_clap, apply_undo


UNDO = 0  # a count of 0 in an event list stands for an undo with that id


def apply_event(user, article, event_id, count, offset):
    if count == UNDO:
        return apply_undo(user, article, event_id, offset)
    return apply_clap(user, article, event_id, count, offset)


def clap_sequence(user, article, claps, start_offset=0):
    counted = []
    for i, (clap_id, count) in enumerate(claps):
        applied = apply_event(user, article, clap_id, count, start_offset + i)
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
    st.one_of(
        st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.integers(1, 50)),
        st.tuples(st.sampled_from(["undo1", "undo2", "undo3", "undo4", "undo5", "undo6", "undo7"]), st.just(UNDO)),
    ),
    min_size=1,
    max_size=30,
)


def reference_count(events):
    """The rules written out plainly: what the user has counted after each event."""
    total, counted_ids, undo_ids, history = 0, set(), set(), []
    for event_id, count in events:
        if count == UNDO:
            if event_id not in undo_ids and len(undo_ids) < MAX_UNDOS_PER_USER:
                undo_ids.add(event_id)
                total = 0
        elif event_id not in counted_ids:
            gained = min(count, MAX_CLAPS_PER_USER - total)
            if gained:
                counted_ids.add(event_id)
                total += gained
        history.append(total)
    return history


@settings(max_examples=300, deadline=None)
@given(events=events, data=st.data())
def test_any_crash_and_replay_pattern_ends_at_the_once_only_result(events, data):
    """At-least-once delivery: re-reading any suffix, with either record stale, changes nothing."""
    expected_user, expected_article, _ = clap_sequence(UserClaps(), ArticleTally(), events)

    # Snapshots of each record after every offset, as a crash could leave them.
    users, articles = [UserClaps()], [ArticleTally()]
    for offset, (clap_id, count) in enumerate(events):
        applied = apply_event(users[-1], articles[-1], clap_id, count, offset)
        users.append(applied.user)
        articles.append(applied.article)

    # A crash leaves each record at its own point; processing restarts at the older one.
    user_at = data.draw(st.integers(0, len(events)))
    article_at = data.draw(st.integers(0, len(events)))
    user, article = users[user_at], articles[article_at]
    for offset in range(min(user_at, article_at), len(events)):
        clap_id, count = events[offset]
        applied = apply_event(user, article, clap_id, count, offset)
        user, article = applied.user, applied.article

    assert article.total == expected_article.total == user.total == reference_count(events)[-1]
    assert user == expected_user
    assert user.total <= MAX_CLAPS_PER_USER
    assert len(user.accepted) <= MAX_CLAPS_PER_USER
    assert len(user.undos) <= MAX_UNDOS_PER_USER
    assert len(user.undone) <= MAX_UNDOS_PER_USER * MAX_CLAPS_PER_USER


@settings(max_examples=300, deadline=None)
@given(events=events)
def test_each_event_counts_what_the_plain_rules_say(events):
    """Undo takes back all, a batch id counted before an undo never counts again, an undo id once."""
    user, article = UserClaps(), ArticleTally()
    for offset, ((event_id, count), expected) in enumerate(zip(events, reference_count(events))):
        applied = apply_event(user, article, event_id, count, offset)
        user, article = applied.user, applied.article
        assert user.total == article.total == expected
        assert UserClaps.from_dict(user.to_dict()) == user


def test_undo_takes_back_everything_the_user_counted_and_they_may_clap_again_to_the_cap():
    user, article, counted = clap_sequence(UserClaps(), ArticleTally(), [("a", 30), ("b", 30), ("u1", UNDO)])
    assert counted == [30, 20, -50]
    assert (user.total, article.total) == (0, 0)
    user, article, counted = clap_sequence(user, article, [("c", 30), ("d", 30)], start_offset=3)
    assert counted == [30, 20]
    assert (user.total, article.total) == (50, 50)


def test_a_batch_retried_after_an_undo_does_not_count_again():
    user, article, counted = clap_sequence(UserClaps(), ArticleTally(), [("a", 3), ("u1", UNDO), ("a", 3), ("b", 2)])
    assert counted == [3, -3, 0, 2]
    assert article.total == 2


def test_an_undo_retried_after_new_claps_takes_nothing():
    user, article, counted = clap_sequence(UserClaps(), ArticleTally(), [("a", 3), ("u1", UNDO), ("b", 4), ("u1", UNDO)])
    assert counted == [3, -3, 4, 0]
    assert article.total == 4


def test_undos_past_the_bound_take_nothing():
    events = []
    for i in range(MAX_UNDOS_PER_USER + 1):
        events += [(f"c{i}", 2), (f"u{i}", UNDO)]
    user, article, counted = clap_sequence(UserClaps(), ArticleTally(), events)
    assert counted == [2, -2] * MAX_UNDOS_PER_USER + [2, 0]
    assert article.total == 2
    assert len(user.undos) == MAX_UNDOS_PER_USER


def test_an_undo_with_others_clapping_drops_the_total_by_this_users_claps_only():
    me, other, article = UserClaps(), UserClaps(), ArticleTally()
    for offset, (who, event_id, count) in enumerate([("me", "a", 5), ("other", "b", 7), ("me", "u", UNDO)]):
        record = me if who == "me" else other
        applied = apply_event(record, article, event_id, count, offset)
        article = applied.article
        if who == "me":
            me = applied.user
        else:
            other = applied.user
    assert (article.total, me.total, other.total) == (7, 0, 7)


def test_crash_between_user_and_article_writes_of_an_undo_recovers_the_drop():
    claps = clap_sequence(UserClaps(), ArticleTally(), [("a", 4)])
    undone = apply_undo(claps[0], claps[1], "u1", offset=1)
    recovered = apply_undo(undone.user, claps[1], "u1", offset=1)  # the article record was not saved
    assert (recovered.counted, recovered.article.total, recovered.replayed) == (-4, 0, False)


def test_records_round_trip_through_dicts():
    user = UserClaps(3, 9, (("a", 9, 3),))
    assert UserClaps.from_dict(user.to_dict()) == user
    assert "undone" not in user.to_dict()  # a record without undos is stored as before
    undid = UserClaps(3, 9, (("a", 9, 3),), (("b", 2, 5),), (("u", 4, 5),))
    assert UserClaps.from_dict(undid.to_dict()) == undid
    tally = ArticleTally(5, 9)
    assert ArticleTally.from_dict(tally.to_dict()) == tally
