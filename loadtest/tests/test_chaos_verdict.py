"""The chaos checker's rules, on literal claps and log events: each way the service could be wrong
is caught with its exact size, and a correct service passes."""
from __future__ import annotations

from loadtest.chaos.verdict import ACKED, ClapRecord, LogEvent, judge, recount

ARTICLE = "a1"


def clap(clap_id: str, count: int, outcome: str = ACKED, user: str = "u1", ack_seq: int | None = None) -> ClapRecord:
    return ClapRecord(clap_id, ARTICLE, user, count, "phase", 0.0, attempts=1, outcome=outcome, ack_seq=ack_seq)


def event(offset: int, clap_id: str, count: int, user: str = "u1", partition: int = 0) -> LogEvent:
    return LogEvent(partition, offset, ARTICLE, user, count, clap_id)


def test_the_recount_applies_the_cap_and_counts_a_repeated_id_once():
    log = [event(0, "x", 30), event(1, "x", 30), event(2, "y", 30), event(3, "z", 5, user="u2")]
    counted = recount(log)
    assert counted.totals == {ARTICLE: 55}
    assert counted.per_user == {(ARTICLE, "u1"): 50, (ARTICLE, "u2"): 5}


def test_a_service_that_agrees_with_the_log_and_the_acks_passes():
    claps = [clap("x", 3, ack_seq=1), clap("y", 4, ack_seq=2), clap("lost-answer", 2, outcome="unknown")]
    log = [event(0, "x", 3), event(1, "y", 4), event(2, "lost-answer", 2)]
    verdict = judge(claps, recount(log), {"cassandra": {ARTICLE: 9}, "reader r0": {ARTICLE: 9}}, [ARTICLE],
                    partition_of={ARTICLE: 0})
    assert verdict.ok
    assert (verdict.acked, verdict.unknown, verdict.unknown_in_log) == (2, 1, 1)


def test_an_acked_batch_missing_from_the_log_is_lost_with_its_claps():
    claps = [clap("x", 3), clap("y", 4)]
    verdict = judge(claps, recount([event(0, "x", 3)]), {"cassandra": {ARTICLE: 3}}, [ARTICLE])
    assert verdict.acked_lost == {"y": 4}
    assert verdict.lost == 4
    assert verdict.under_acked == {(ARTICLE, "u1"): 4}
    assert not verdict.ok


def test_a_total_above_the_recount_is_a_double_count_of_exactly_the_excess():
    claps = [clap("x", 3), clap("y", 4)]
    log = [event(0, "x", 3), event(1, "y", 4), event(2, "y", 4)]  # a retry: in the log twice
    verdict = judge(claps, recount(log), {"cassandra": {ARTICLE: 11}, "rest gateway-1": {ARTICLE: 7}}, [ARTICLE])
    assert verdict.double_counts == 4
    assert verdict.disagreements == {"cassandra": {ARTICLE: (11, 7)}}
    assert verdict.missing == 0


def test_a_source_behind_the_recount_is_missing_claps():
    claps = [clap("x", 3), clap("y", 4)]
    log = [event(0, "x", 3), event(1, "y", 4)]
    verdict = judge(claps, recount(log), {"reader r3": {ARTICLE: 3}, "rest gateway-2": {ARTICLE: None}}, [ARTICLE])
    assert verdict.missing == 7  # the gateway that did not answer shows nothing at all
    assert verdict.lost == 0  # the log has every acked clap: nothing acked is lost, a source is behind
    assert not verdict.ok


def test_claps_in_the_log_that_nobody_sent_are_counted_too_many():
    claps = [clap("x", 3)]
    log = [event(0, "x", 3), event(1, "forged", 10)]
    verdict = judge(claps, recount(log), {"cassandra": {ARTICLE: 13}}, [ARTICLE])
    assert verdict.over_sent == {(ARTICLE, "u1"): 10}
    assert verdict.double_counts == 10


def test_a_refused_clap_found_in_the_log_may_count_once_and_is_reported():
    claps = [clap("x", 3), clap("y", 4, outcome="refused:unavailable")]
    log = [event(0, "x", 3), event(1, "y", 4)]
    verdict = judge(claps, recount(log), {"cassandra": {ARTICLE: 7}}, [ARTICLE])
    assert verdict.ok
    assert verdict.refused_in_log == 1


def test_an_ack_whose_position_names_another_event_is_caught():
    claps = [clap("x", 3, ack_seq=2)]
    log = [event(0, "x", 3), event(1, "other", 1, user="u2")]
    verdict = judge([*claps, clap("other", 1, user="u2")], recount(log), {"cassandra": {ARTICLE: 4}}, [ARTICLE],
                    partition_of={ARTICLE: 0})
    assert verdict.ack_position_errors == ["x: acked at seq 2, the log has 'other' there"]


def test_claps_past_the_cap_are_acked_yet_add_nothing():
    claps = [clap(f"b{i}", 13) for i in range(6)]  # 78 claps acked, 50 count
    log = [event(i, f"b{i}", 13) for i in range(6)]
    verdict = judge(claps, recount(log), {"cassandra": {ARTICLE: 50}}, [ARTICLE])
    assert verdict.ok
    assert recount(log).totals[ARTICLE] == 50


def test_an_outage_is_the_longest_stretch_without_events_counted_from_the_fault():
    from loadtest.chaos.clients import Gaps

    gaps = Gaps.starting(100.0)
    assert gaps.longest(105.0) is None  # nothing came yet: the checker reports it as never
    for at in (100.4, 100.9, 109.9, 110.3):  # a 9-second outage beginning after the fault
        gaps.event(at)
    assert gaps.longest(110.5) == 9.0
    assert gaps.longest(121.0) == 121.0 - 110.3  # and a stop that is still going on counts too
