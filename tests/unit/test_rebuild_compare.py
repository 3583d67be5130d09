"""processor.rebuild's verdict on rebuilt against live totals, on literal positions."""
from processor.rebuild import Position, compare


def test_equal_positions_must_carry_equal_totals():
    outcome = compare({"a": Position(1, 30, 12), "b": Position(1, 7, 3)}, {"a": Position(2, 30, 12), "b": Position(2, 7, 4)})
    assert outcome.identical == ["a"]
    assert [(d.article, d.why) for d in outcome.differences] == [("b", "same position, different totals")]


def test_different_positions_wait_for_the_log_and_then_each_must_match_its_recount():
    live, rebuilt = {"a": Position(1, 29, 12), "b": Position(1, 40, 9)}, {"a": Position(2, 30, 12), "b": Position(2, 41, 9)}
    assert compare(live, rebuilt).moving == ["a", "b"]
    outcome = compare(live, rebuilt, {("a", 29): 12, ("a", 30): 12, ("b", 40): 8, ("b", 41): 9})
    assert outcome.agreeing == ["a"]
    assert [(d.article, d.why) for d in outcome.differences] == [("b", "the live total: the log recounts 8")]


def test_a_rebuilt_total_the_log_does_not_support_is_a_difference_even_where_live_agrees():
    outcome = compare({"a": Position(1, 5, 10)}, {"a": Position(2, 5, 10)}, {("a", 5): 11})
    assert [(d.article, d.why) for d in outcome.differences] == [("a", "the log recounts 11")]


def test_an_article_on_one_side_only_is_a_difference():
    outcome = compare({"a": Position(1, 5, 10)}, {"b": Position(2, 3, 1)})
    assert [(d.article, d.why) for d in outcome.differences] == [("a", "only one side has it"), ("b", "only one side has it")]
