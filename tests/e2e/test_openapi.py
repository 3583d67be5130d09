"""gateway/openapi.json against the live embedded gateway: every operation of the document is
called, every answer is one the document lists for it (status, content type, and for JSON the
body validated with jsonschema against the documented schema), and every route the gateway
answers is in the document."""
from __future__ import annotations

import inspect
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
import websockets

import gateway.server
from gateway.articles import SEEDED
from tests.e2e.conftest import ADMIN_TOKEN, EmbeddedService

DOCUMENT = json.loads((Path(gateway.server.__file__).parent / "openapi.json").read_text())
METHODS = ("get", "put", "post", "delete", "patch")
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FOREIGN = {"Origin": "https://elsewhere.example"}
SEEDED_ID = SEEDED[0].id
# Answers this test cannot bring about on a healthy embedded gateway, and where they are tested.
NOT_PROVOKED_HERE = {
    ("/api/articles/{article}/claps", "get", "503"): "the counter store away: tests/e2e/test_stores_down.py",
    ("/api/claps", "get", "503"): "the counter store away: tests/e2e/test_stores_down.py",
    ("/articles/{article}", "get", "503"): "the counter store away: tests/e2e/test_stores_down.py",
    ("/healthz", "get", "503"): "a vital task ended: tests/e2e/test_crash_only.py",
    ("/api/admin/articles/{article}", "put", "404"): "distributed mode only (articles come from Kafka)",
    ("/api/admin/articles/{article}", "delete", "404"): "distributed mode only (articles come from Kafka)",
}


@dataclass
class Answer:
    template: str
    method: str
    status: int
    content_type: str
    body: bytes


def call(base_url: str, template: str, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
    request = urllib.request.Request(base_url + path, method=method.upper(), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, content_type, body = response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        status, content_type, body = error.code, error.headers.get("Content-Type", ""), error.read()
    return Answer(template, method, status, content_type.split(";")[0].strip(), body)


def check(answer: Answer) -> None:
    """The answer is one the document lists for its operation, and its body fits the schema."""
    operation = DOCUMENT["paths"][answer.template][answer.method]
    documented = operation["responses"].get(str(answer.status))
    assert documented is not None, f"{answer.method.upper()} {answer.template} answered {answer.status}: not documented"
    content = documented.get("content", {})
    if not content:
        assert answer.body == b"", answer
        return
    assert answer.content_type in content, f"{answer.template} {answer.status}: {answer.content_type} not in {list(content)}"
    schema = content[answer.content_type]["schema"]
    body = json.loads(answer.body) if answer.content_type == "application/json" else answer.body.decode()
    # Resolve "#/components/..." against the document itself.
    jsonschema.Draft202012Validator({**schema, "components": DOCUMENT["components"]}).validate(body)


def test_the_document_is_openapi_3_1_and_served_as_is(embedded):
    jsonschema.Draft202012Validator.check_schema({"$defs": DOCUMENT["components"]["schemas"]})
    assert DOCUMENT["openapi"] == "3.1.0"
    answer = call(embedded.base_url, "/api/openapi.json", "get", "/api/openapi.json")
    check(answer)
    assert json.loads(answer.body) == DOCUMENT


async def test_every_documented_operation_answers_as_documented(tmp_path, log_dir):
    # A cap of one connection and three new identities, so that "full" and "rate limited" can be
    # provoked too.
    service = EmbeddedService(tmp_path / "data", log_dir, name="openapi")
    service.start(MAX_CONNECTIONS="1", NEW_IDENTITIES_PER_MINUTE="1", NEW_IDENTITY_BURST="3")
    base = service.base_url
    try:
        answers = [
            call(base, "/api/openapi.json", "get", "/api/openapi.json"),
            call(base, "/api/articles", "get", "/api/articles"),
            call(base, "/api/articles/{article}/claps", "get", f"/api/articles/{SEEDED_ID}/claps"),
            call(base, "/api/articles/{article}/claps", "get", "/api/articles/bad.id/claps"),
            call(base, "/api/articles/{article}/claps", "get", "/api/articles/nobody-wrote-this/claps"),
            call(base, "/api/claps", "get", f"/api/claps?articles={SEEDED_ID},nobody-wrote-this"),
            call(base, "/api/claps", "get", "/api/claps"),
            call(base, "/api/claps", "get", "/api/claps?articles=bad.id"),
            call(base, "/api/admin/articles/{article}", "put", "/api/admin/articles/fresh?title=Fresh", ADMIN),
            call(base, "/api/admin/articles/{article}", "put", "/api/admin/articles/fresh?title=Fresh"),
            call(base, "/api/admin/articles/{article}", "put", "/api/admin/articles/bad.id?title=Bad", ADMIN),
            call(base, "/api/admin/articles/{article}", "delete", "/api/admin/articles/fresh", ADMIN),
            call(base, "/api/admin/articles/{article}", "delete", "/api/admin/articles/fresh"),
            call(base, "/api/admin/articles/{article}", "delete", "/api/admin/articles/bad.id", ADMIN),
            call(base, "/api/session", "post", "/api/session"),
            call(base, "/api/session", "post", "/api/session", FOREIGN),
            call(base, "/healthz", "get", "/healthz"),
            call(base, "/readyz", "get", "/readyz"),
            call(base, "/metrics", "get", "/metrics"),
            call(base, "/", "get", "/"),
            call(base, "/", "get", "/?page=2"),
            call(base, "/", "get", "/?page=99"),
            call(base, "/widget.js", "get", "/widget.js"),
            call(base, "/articles/{article}", "get", f"/articles/{SEEDED_ID}"),
            call(base, "/articles/{article}", "get", "/articles/nobody-wrote-this"),
            call(base, "/static/{file}", "get", "/static/app.js"),
            call(base, "/static/{file}", "get", "/static/style.css"),
            call(base, "/static/{file}", "get", "/static/secrets.txt"),
            call(base, "/ws", "get", "/ws"),  # not a websocket handshake
            call(base, "/ws", "get", "/ws", FOREIGN),
        ]
        # The one connection the cap allows: /readyz says full, the next websocket is refused.
        async with websockets.connect(service.ws_url, open_timeout=10) as reader:
            answers.append(Answer("/ws", "get", reader.response.status_code, "", b""))
            answers.append(call(base, "/readyz", "get", "/readyz"))
            answers.append(call(base, "/healthz", "get", "/healthz"))
            answers.append(call(base, "/ws", "get", "/ws", {"Connection": "Upgrade", "Upgrade": "websocket",
                                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                                         "Sec-WebSocket-Version": "13"}))
        # New identities: three in the burst (the session and the page above took two).
        for _ in range(3):
            answers.append(call(base, "/api/session", "post", "/api/session"))

        for answer in answers:
            check(answer)
        statuses = {(a.template, a.method, a.status) for a in answers}
        assert ("/readyz", "get", 503) in statuses and ("/ws", "get", 503) in statuses
        assert ("/api/session", "post", 429) in statuses
        assert json.loads(next(a.body for a in answers if (a.template, a.status) == ("/readyz", 503)))["status"] == "full"

        exercised = {(t, m, str(s)) for t, m, s in statuses}
        unexercised = {
            (template, method, status)
            for template, item in DOCUMENT["paths"].items()
            for method, operation in item.items() if method in METHODS
            for status in operation["responses"]
        } - exercised - NOT_PROVOKED_HERE.keys()
        assert unexercised == set()
    finally:
        service.stop()


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-id", template)


def test_every_route_in_the_gateway_is_documented():
    """Every path the router compares with, and every path pattern it matches, is in the document."""
    source = inspect.getsource(gateway.server.Gateway._route)
    documented = list(DOCUMENT["paths"])
    literals = set(re.findall(r'"(/[^"]*)"', source))
    assert literals, "no paths found in the router: has it moved?"
    for literal in literals:
        if literal.endswith("/") and literal != "/":  # a prefix, e.g. /static/
            assert any(template.startswith(literal) for template in documented), literal
        else:
            assert literal in documented, literal
    patterns = [value for name, value in vars(gateway.server).items()
                if isinstance(value, re.Pattern) and name in source]
    assert patterns, "no path patterns found in the router: has it moved?"
    for pattern in patterns:
        assert any(pattern.match(concrete(template)) for template in documented), pattern.pattern


@pytest.mark.parametrize("template", [t for t in DOCUMENT["paths"] if t != "/ws"])
def test_methods_not_documented_are_refused(embedded, template):
    undocumented = [m for m in METHODS if m not in DOCUMENT["paths"][template]]
    for method in undocumented:
        answer = call(embedded.base_url, template, method, concrete(template), ADMIN)
        assert answer.status == 405, (method, template, answer)
        assert json.loads(answer.body)["error"] == "method_not_allowed"


def test_a_path_not_documented_is_not_found(embedded):
    answer = call(embedded.base_url, "", "get", "/api/nothing-here")
    assert answer.status == 404 and json.loads(answer.body)["error"] == "not_found"
