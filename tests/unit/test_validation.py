import orjson
import pytest

from core.validation import Clap, Join, Leave, Refused, Undo, parse_client_message


def msg(**doc) -> bytes:
    return orjson.dumps(doc)


def test_join_leave_clap_parse():
    assert parse_client_message(msg(type="join", article="a-1")) == Join("a-1")
    assert parse_client_message(msg(type="leave", article="a_1")) == Leave("a_1")
    assert parse_client_message(msg(type="clap", article="a", count=3, id="c1")) == Clap("a", 3, "c1")
    assert parse_client_message(msg(type="undo", article="a", id="u1")) == Undo("a", "u1")


@pytest.mark.parametrize("doc", [{"type": "undo", "article": "a"}, {"type": "undo", "article": "a", "id": "bad id"}])
def test_an_undo_without_a_usable_id_is_refused(doc):
    with pytest.raises(Refused) as refused:
        parse_client_message(msg(**doc))
    assert (refused.value.code, refused.value.clap_id) == ("bad_request", None)


@pytest.mark.parametrize("count", [1, 50])
def test_count_bounds_accepted(count):
    assert parse_client_message(msg(type="clap", article="a", count=count, id="c")).count == count


@pytest.mark.parametrize("count", [0, 51, -1, 2.5, "3", True, None])
def test_count_out_of_range_or_wrong_type_refused_with_the_clap_id(count):
    with pytest.raises(Refused) as refused:
        parse_client_message(msg(type="clap", article="a", count=count, id="c9"))
    assert refused.value.code == "bad_count"
    assert refused.value.clap_id == "c9"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1,2]",
        msg(type="dance", article="a"),
        msg(type="join", article="has space"),
        msg(type="join", article="x" * 65),
        msg(type="join"),
        msg(type="clap", article="a", count=1),
        msg(type="clap", article="a", count=1, id="bad id!"),
        b"{" + b" " * 2000 + b"}",
    ],
)
def test_malformed_messages_are_bad_requests(raw):
    with pytest.raises(Refused) as refused:
        parse_client_message(raw)
    assert refused.value.code == "bad_request"
    assert refused.value.message
