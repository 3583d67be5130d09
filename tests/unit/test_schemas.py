"""What the code writes validates against the published schemas (what analytics consumers read)."""
import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

import schemas
from core.counting import counting_frame
from core.messages import CATCHING_UP, LIVE, ClapRecorded, CountChanged, CountingStatus, undo_recorded

NAMES = ["clap-recorded.v1", "clap-undo.v1", "count-changed.v1", "counting-status.v1", "ws-client.v1", "ws-server.v1"]
REGISTRY = Registry().with_resources(
    (f"{name}.json", Resource.from_contents(schemas.load(name))) for name in NAMES
)


def validator(name):
    return Draft202012Validator(schemas.load(name), registry=REGISTRY)


@pytest.mark.parametrize("name", NAMES)
def test_schemas_are_valid_json_schema(name):
    Draft202012Validator.check_schema(schemas.load(name))


def test_clap_event_matches_its_schema():
    doc = orjson.loads(ClapRecorded("a", "u1", 3, "c1", 123).to_json())
    validator("clap-recorded.v1").validate(doc)
    assert ClapRecorded.from_json(orjson.dumps(doc)) == ClapRecorded("a", "u1", 3, "c1", 123)


def test_count_message_matches_its_schema_on_topic_and_websocket():
    update = CountChanged("a", 10, 2, 4, 1, 99)
    doc = orjson.loads(update.to_json())
    validator("count-changed.v1").validate(doc)
    validator("ws-server.v1").validate(doc)
    assert CountChanged.from_json(update.to_json()) == update


def test_server_acks_and_errors_match():
    validator("ws-server.v1").validate({"type": "ack", "id": "c1", "seq": 8})
    validator("ws-server.v1").validate({**CountChanged("a", 10, 2, 4, 1, 99).to_dict(), "mine": 3})
    assert list(validator("ws-server.v1").iter_errors({"type": "ack", "id": "c1"}))  # an ack says where it counts
    validator("ws-server.v1").validate({"type": "error", "code": "bad_count", "message": "m", "id": "c1"})


def test_schema_refuses_a_count_out_of_range():
    errors = list(validator("ws-client.v1").iter_errors({"type": "clap", "article": "a", "count": 51, "id": "x"}))
    assert errors


def test_undo_event_matches_its_schema_and_not_the_claps():
    undo = undo_recorded("a", "u1", "undo-1", 123)
    doc = orjson.loads(undo.to_json())
    assert doc == {"v": 1, "type": "undo", "article": "a", "user": "u1", "id": "undo-1", "at": 123}
    validator("clap-undo.v1").validate(doc)
    assert list(validator("clap-recorded.v1").iter_errors(doc))  # a consumer tells them apart by type
    assert ClapRecorded.from_json(undo.to_json()) == undo and undo.is_undo


def test_an_unknown_record_type_on_the_clap_topic_is_malformed():
    with pytest.raises(ValueError):
        ClapRecorded.from_json(b'{"v":1,"type":"dance","article":"a","user":"u","id":"x","at":1}')


def test_undo_message_and_the_lower_total_it_brings_match():
    validator("ws-client.v1").validate({"type": "undo", "article": "a", "id": "undo-1"})
    assert list(validator("ws-client.v1").iter_errors({"type": "undo", "article": "a"}))
    validator("count-changed.v1").validate(CountChanged("a", 3, -5, 9, 1, 99).to_dict())


def test_counting_status_on_the_fan_out_topic_and_its_websocket_frame_match():
    for state in (LIVE, CATCHING_UP):
        doc = orjson.loads(CountingStatus(3, state, 2).to_json())
        validator("counting-status.v1").validate(doc)
        assert list(validator("count-changed.v1").iter_errors(doc))  # a consumer of totals tells them apart
        validator("ws-server.v1").validate(orjson.loads(counting_frame("a", state)))
    assert list(validator("ws-server.v1").iter_errors({"type": "counting", "article": "a", "state": "asleep"}))
