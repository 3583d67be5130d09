"""core.presence: readers per article summed over gateways, newest report wins, silence expires."""
from __future__ import annotations

import pytest

from core.presence import PresenceReport, PresenceTally, presence_frame


def test_reports_of_several_gateways_add_up_per_article():
    tally = PresenceTally(ttl_ms=5_000)
    assert tally.apply(PresenceReport("g1", 1, {"a": 3, "b": 1}), now_ms=0) == {"a", "b"}
    assert tally.apply(PresenceReport("g2", 1, {"a": 2}), now_ms=10) == {"a"}
    assert (tally.reading("a"), tally.reading("b"), tally.reading("c")) == (5, 1, 0)
    # A gateway's newer report replaces its older one: b is gone from g1, a moved by one.
    assert tally.apply(PresenceReport("g1", 2, {"a": 4}), now_ms=1_000) == {"a", "b"}
    assert (tally.reading("a"), tally.reading("b")) == (6, 0)


def test_an_unchanged_report_changes_nothing_and_an_older_one_is_ignored():
    tally = PresenceTally()
    tally.apply(PresenceReport("g1", 5, {"a": 3}), now_ms=0)
    assert tally.apply(PresenceReport("g1", 6, {"a": 3}), now_ms=1_000) == set()
    assert tally.apply(PresenceReport("g1", 4, {"a": 9}), now_ms=1_100) == set()  # late, reordered
    assert tally.apply(PresenceReport("g1", 6, {"a": 9}), now_ms=1_100) == set()  # replayed seq
    assert tally.reading("a") == 3


def test_a_gateway_gone_quiet_expires_after_the_ttl_and_its_readers_stop_counting():
    tally = PresenceTally(ttl_ms=5_000)
    tally.apply(PresenceReport("g1", 1, {"a": 3}), now_ms=0)
    tally.apply(PresenceReport("g2", 1, {"a": 2}), now_ms=0)
    tally.apply(PresenceReport("g2", 2, {"a": 2}), now_ms=4_000)  # g2 keeps reporting, g1 does not
    assert tally.expire(now_ms=5_000) == set()
    assert tally.expire(now_ms=5_001) == {"a"}
    assert tally.reading("a") == 2 and tally.gateways == {"g2"}


def test_a_clean_stop_reports_nothing_and_its_readers_go_at_once():
    tally = PresenceTally()
    tally.apply(PresenceReport("g1", 1, {"a": 3}), now_ms=0)
    assert tally.apply(PresenceReport("g1", 2, {}), now_ms=100) == {"a"}
    assert tally.reading("a") == 0


def test_reports_and_messages_have_their_wire_form():
    report = PresenceReport("gateway-1-ab12", 7, {"a": 2}, 123)
    assert PresenceReport.from_json(report.to_json()) == report
    assert presence_frame("a", 4) == b'{"type":"presence","article":"a","reading":4}'
    with pytest.raises(ValueError):
        PresenceReport.from_json(b'{"gateway":"g","seq":1,"counts":{"a":-1}}')
