"""What the code writes validates against the published schemas (what analytics consumers read)."""
import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

import schemas
from core.messages import ClapRecorded, CountChanged

NAMES = ["clap-recorded.v1", "count-changed.v1", "ws-client.v1", "ws-server.v1"]
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
