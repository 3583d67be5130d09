"""The decoded records a worker keeps between batches (processor.recent)."""
from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from core.ledger import MAX_CLAPS_PER_USER, ArticleTally, UserClaps, apply_clap, apply_undo
from processor.recent import RecentRecords


def test_a_record_written_is_read_back_until_a_rebalance() -> None:
    recent: RecentRecords[int] = RecentRecords(limit=10)
    recent.remember({"a": 1, "b": 2}, recent.era)
    recent.remember({"a": 3}, recent.era)
    assert (recent.get("a"), recent.get("b"), recent.get("c")) == (3, 2, None)
    recent.forget()
    assert (recent.get("a"), recent.get("b"), len(recent)) == (None, None, 0)


def test_writes_of_a_batch_begun_before_a_rebalance_are_not_kept() -> None:
    recent: RecentRecords[int] = RecentRecords(limit=10)
    began = recent.era
    recent.remember({"users": 1}, began)  # written back before the rebalance: kept, then forgotten
    recent.forget()
    recent.remember({"tallies": 2}, began)  # the same batch's next table, after it
    assert (recent.get("users"), recent.get("tallies")) == (None, None)
    recent.remember({"tallies": 3}, recent.era)
    assert recent.get("tallies") == 3


def test_the_least_recently_written_go_first_when_full() -> None:
    recent: RecentRecords[int] = RecentRecords(limit=3)
    recent.remember({"a": 1, "b": 1, "c": 1}, recent.era)
    recent.remember({"a": 2}, recent.era)  # a is now the newest
    recent.remember({"d": 1, "e": 1}, recent.era)
    assert sorted(recent.records) == ["a", "d", "e"]
    assert len(recent) == 3
    keeps_none: RecentRecords[int] = RecentRecords(limit=0)  # PROCESSOR_RECENT_RECORDS=0
    keeps_none.remember({"a": 1}, keeps_none.era)
    assert (keeps_none.get("a"), len(keeps_none)) == (None, 0)


clap_ids = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=12)


events = st.lists(st.one_of(st.tuples(st.just("clap"), clap_ids, st.integers(1, MAX_CLAPS_PER_USER)),
                             st.tuples(st.just("undo"), clap_ids, st.just(0))), max_size=80)


@given(events)
def test_a_kept_record_is_what_reading_the_store_would_give(log: list[tuple[str, str, int]]) -> None:
    """The store holds orjson of ``to_dict``; a read decodes it with ``from_dict``. What the
    worker keeps instead must be equal, or a cached read would count differently."""
    user, article = UserClaps(), ArticleTally()
    for offset, (kind, event_id, count) in enumerate(log):
        if kind == "clap":
            applied = apply_clap(user, article, event_id, count, offset)
        else:
            applied = apply_undo(user, article, event_id, offset)
        user, article = applied.user, applied.article
        assert UserClaps.from_dict(orjson.loads(orjson.dumps(user.to_dict()))) == user
        assert ArticleTally.from_dict(orjson.loads(orjson.dumps(article.to_dict()))) == article
