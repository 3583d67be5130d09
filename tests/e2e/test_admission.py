"""Who may come in, against a live embedded gateway: identities that last and cannot be farmed,
origins, known articles only, join rate limits and the frame size limit (docs/PROTOCOL.md)."""
from __future__ import annotations

import http.client
import os
import stat
from urllib.parse import urlsplit

import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.e2e.conftest import ADMIN_TOKEN, EmbeddedService
from tests.support.clients import Reader, http_json


def call(url: str, method: str = "GET", headers: dict[str, str] | None = None, source: str = "127.0.0.1",
         ) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTP request from a chosen loopback address (every 127.x.y.z is this machine)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5, source_address=(source, 0))
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def token_cookie(headers: http.client.HTTPMessage) -> str | None:
    for value in headers.get_all("Set-Cookie") or []:
        if value.startswith("clap_token="):
            return value
    return None


@pytest.fixture
def service(tmp_path, log_dir):
    """An embedded gateway a test starts itself, with the settings it is about."""
    started: list[EmbeddedService] = []

    def start(name: str, **env: str) -> EmbeddedService:
        one = EmbeddedService(tmp_path / name, log_dir, name=name)
        one.start(**env)
        started.append(one)
        return one

    yield start
    for one in started:
        if one.process is not None:
            one.stop()


async def test_a_restart_keeps_every_identity_and_the_admin_token(service):
    embedded = service("restart", CLAP_SECRET="", CLAP_ADMIN_TOKEN="")
    secret_file = embedded.data_dir / "secret"
    admin_file = embedded.data_dir / "admin-token"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(admin_file).st_mode) == 0o600
    assert f"admin token (PUT /api/admin/articles/ID?title=T): {admin_file}" in embedded.process.log_text()
    token = http_json(f"{embedded.base_url}/api/session", "POST")["token"]
    embedded.register("kept", admin_token=admin_file.read_text().strip())

    embedded.stop()
    embedded.start(CLAP_SECRET="", CLAP_ADMIN_TOKEN="")
    clapper = await Reader.open(embedded.ws_url, token)
    await clapper.join("kept")
    await clapper.clap("kept", 5, "after-restart")
    assert await clapper.wait_for(lambda r: "after-restart" in r.acks and r.totals.get("kept") == 5, 10)
    assert clapper.errors == []
    await clapper.close()
    # The article page recognises the old cookie, so it issues no new identity.
    status, headers, _ = call(f"{embedded.base_url}/articles/kept", headers={"Cookie": f"clap_token={token}"})
    assert (status, token_cookie(headers)) == (200, None)


def test_the_cookie_is_lax_and_a_valid_identity_is_never_replaced(embedded):
    status, headers, _ = call(f"{embedded.base_url}/articles/hello-claps")
    assert status == 200
    issued = token_cookie(headers)
    assert issued is not None and "SameSite=Lax" in issued and "HttpOnly" in issued
    token = issued.split(";")[0].removeprefix("clap_token=")
    # A reader arriving from a link on another site brings the cookie (Lax) and keeps it.
    status, headers, _ = call(
        f"{embedded.base_url}/articles/why-logs-win", headers={"Cookie": f"clap_token={token}", "Referer": "https://elsewhere.example/"}
    )
    assert (status, token_cookie(headers)) == (200, None)
    # Asking for a session with a valid cookie returns that identity, not a new one.
    status, _, body = call(f"{embedded.base_url}/api/session", "POST", {"Cookie": f"clap_token={token}"})
    assert status == 200 and orjson.loads(body)["token"] == token


def test_new_identities_are_rationed_per_client_address(service):
    embedded = service("identities", NEW_IDENTITY_BURST="3", NEW_IDENTITIES_PER_MINUTE="0.01")
    session = f"{embedded.base_url}/api/session"
    assert call(session, "POST")[0] == 200
    assert call(session, "POST")[0] == 200
    status, headers, _ = call(f"{embedded.base_url}/articles/hello-claps")  # the page's identity counts too
    assert status == 200 and token_cookie(headers) is not None
    status, headers, body = call(session, "POST")
    # 0.01 new identities a minute: one every 6,000 s.
    assert (status, orjson.loads(body)["error"], headers["Retry-After"]) == (429, "rate_limited", "6000")
    # Past the limit the page still serves the article, without an identity.
    status, headers, _ = call(f"{embedded.base_url}/articles/hello-claps")
    assert (status, token_cookie(headers)) == (200, None)
    # Another address has its own allowance.
    assert [call(session, "POST", source="127.0.0.2")[0] for _ in range(4)] == [200, 200, 200, 429]
    metrics = call(f"{embedded.base_url}/metrics")[2].decode()
    assert 'gateway_identities_total{outcome="issued"} 6.0' in metrics
    assert 'gateway_identities_total{outcome="refused"} 3.0' in metrics


def test_behind_a_proxy_the_limit_is_per_forwarded_address(service):
    embedded = service("proxied", NEW_IDENTITY_BURST="1", NEW_IDENTITIES_PER_MINUTE="0.01", CLAP_CLIENT_IP_HEADER="X-Real-IP")
    session = f"{embedded.base_url}/api/session"
    assert call(session, "POST", {"X-Real-IP": "203.0.113.7"})[0] == 200
    assert call(session, "POST", {"X-Real-IP": "203.0.113.7"})[0] == 429
    assert call(session, "POST", {"X-Real-IP": "203.0.113.8"})[0] == 200


async def test_malformed_tokens_are_unauthenticated_never_a_crash(embedded):
    for cookie in ["clap_token=u1.\xe9t\xe9", "clap_token=u1." + "\xe9" * 43, "clap_token=..", "clap_token=u1.%00"]:
        status, headers, _ = call(f"{embedded.base_url}/articles/hello-claps", headers={"Cookie": cookie})
        assert status == 200 and token_cookie(headers) is not None  # treated as no identity
    client = await Reader.open(embedded.ws_url, "u1.%C3%A9t%C3%A9")  # the signature decodes to non-ASCII
    await client.clap("hello-claps", 1, "forged")
    assert await client.wait_for(lambda r: r.errors, 10)
    assert client.errors == [{"type": "error", "code": "unauthenticated", "message": "clapping needs a session token", "id": "forged"}]
    await client.join("hello-claps")  # the connection is still open and usable
    assert await client.wait_for(lambda r: "hello-claps" in r.totals, 10)
    assert client.ws.close_code is None
    await client.close()


async def test_a_foreign_origin_is_refused_and_others_are_served(service):
    embedded = service("origins", CLAP_ALLOWED_ORIGINS="https://news.example, https://Mirror.example")
    own = f"http://127.0.0.1:{embedded.port}"
    for origin in [own, "https://news.example", "https://mirror.example", None]:
        async with websockets.connect(embedded.ws_url, origin=origin, open_timeout=10) as ws:
            await ws.send(orjson.dumps({"type": "join", "article": "hello-claps"}).decode())
            assert orjson.loads(await ws.recv())["type"] == "count"
    for origin in ["https://evil.example", "null", f"http://127.0.0.1:{embedded.port + 1}"]:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(embedded.ws_url, origin=origin, open_timeout=10)
        assert refused.value.response.status_code == 403
    # Nor may another site's page mint a new identity over a visitor's cookie.
    assert call(f"{embedded.base_url}/api/session", "POST", {"Origin": "https://evil.example"})[0] == 403
    assert call(f"{embedded.base_url}/api/session", "POST", {"Origin": "https://news.example"})[0] == 200


async def test_unknown_articles_get_not_found_and_nothing_is_stored_or_logged(embedded):
    base = embedded.base_url
    clapper = await Reader.open(embedded.ws_url, http_json(f"{base}/api/session", "POST")["token"])
    await clapper.join("unpublished")
    await clapper.clap("unpublished", 7, "c-unknown")
    assert await clapper.wait_for(lambda r: len(r.errors) == 2, 10)
    assert [(e["code"], e.get("id")) for e in clapper.errors] == [("not_found", None), ("not_found", "c-unknown")]
    assert clapper.acks == set() and clapper.totals == {}
    assert call(f"{base}/api/articles/unpublished/claps")[0] == 404
    assert call(f"{base}/articles/unpublished")[0] == 404

    # The admin endpoint publishes it, and only with the admin token.
    publish = f"{base}/api/admin/articles/unpublished?title=Now%20published"
    assert call(publish, "PUT")[0] == 401
    assert call(publish, "PUT", {"Authorization": "Bearer wrong"})[0] == 401
    assert call(f"{base}/api/admin/articles/unpublished", "PUT", {"Authorization": f"Bearer {ADMIN_TOKEN}"})[0] == 400
    assert call(publish, "PUT", {"Authorization": f"Bearer {ADMIN_TOKEN}"})[0] == 200
    assert {"id": "unpublished", "title": "Now published"} in http_json(f"{base}/api/articles")
    # The refused clap was never logged: the total starts from zero and counts only what follows.
    assert b"c-unknown" not in (embedded.data_dir / "claps.log").read_bytes()
    assert http_json(f"{base}/api/articles/unpublished/claps")["total"] == 0
    await clapper.join("unpublished")
    await clapper.clap("unpublished", 2, "c-known")
    assert await clapper.wait_for(lambda r: "c-known" in r.acks and r.totals.get("unpublished") == 2, 10)
    assert call(f"{base}/articles/unpublished")[0] == 200

    # Removed again: refused again (the room's readers keep what they have).
    assert call(f"{base}/api/admin/articles/unpublished", "DELETE", {"Authorization": f"Bearer {ADMIN_TOKEN}"})[0] == 200
    await clapper.clap("unpublished", 1, "c-removed")
    assert await clapper.wait_for(lambda r: len(r.errors) == 3, 10)
    assert (clapper.errors[-1]["code"], clapper.errors[-1]["id"]) == ("not_found", "c-removed")
    assert call(f"{base}/api/articles/unpublished/claps")[0] == 404
    await clapper.close()


async def test_published_articles_survive_a_restart(embedded):
    embedded.register("journalled")
    embedded.stop()
    embedded.start()
    assert http_json(f"{embedded.base_url}/api/articles/journalled/claps")["total"] == 0
    assert {"id": "journalled", "title": "journalled"} in http_json(f"{embedded.base_url}/api/articles")


async def test_joins_and_leaves_are_rate_limited_per_connection(service):
    embedded = service("joins", JOIN_BURST="4", JOINS_PER_SECOND="0.01")
    client = await Reader.open(embedded.ws_url, http_json(f"{embedded.base_url}/api/session", "POST")["token"])
    for message in ["join", "leave", "join", "leave", "join", "leave"]:
        await client.ws.send(orjson.dumps({"type": message, "article": "hello-claps"}).decode())
    assert await client.wait_for(lambda r: len(r.errors) == 2, 10)
    assert [e["code"] for e in client.errors] == ["rate_limited", "rate_limited"]
    # Claps have their own allowance.
    await client.clap("hello-claps", 1, "still-claps")
    assert await client.wait_for(lambda r: "still-claps" in r.acks, 10)
    await client.close()


async def test_an_oversize_frame_closes_with_1009_and_a_small_malformed_one_does_not(embedded):
    client = await Reader.open(embedded.ws_url)
    await client.ws.send('{"type":"join","article":"' + "x" * 2000 + '"}')  # malformed, under the limit
    assert await client.wait_for(lambda r: r.errors, 10)
    assert client.errors[0]["code"] == "bad_request"
    await client.join("hello-claps")
    assert await client.wait_for(lambda r: "hello-claps" in r.totals, 10)
    assert client.ws.close_code is None

    await client.ws.send("x" * 5000)
    await client.ws.wait_closed()
    assert client.ws.close_code == 1009
    await client.close()
