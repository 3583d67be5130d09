"""core_rate counts the processor_rate backlog with the processor's core, exactly."""
from loadtest.core_rate import backlog, count_once, expected_totals, log_records


def test_single_taps_past_the_cap_count_fifty_per_user_and_the_round_is_exact():
    claps = list(backlog(articles=3, users=4, claps_per_user=60))
    assert len(claps) == 3 * 4 * 60
    assert expected_totals(claps) == {"art0": 200, "art1": 200, "art2": 200}
    spent, totals = count_once(log_records(claps), batch=100)
    assert totals == expected_totals(claps) and spent >= 0


def test_one_clap_per_user_and_article_counts_one_to_five():
    claps = list(backlog(articles=2, users=5, claps_per_user=1))
    assert sorted(c.count for c in claps if c.article == "art0") == [1, 2, 3, 4, 5]
    assert count_once(log_records(claps), batch=3)[1] == expected_totals(claps) == {"art0": 15, "art1": 15}
