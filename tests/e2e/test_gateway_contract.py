"""The public contract (docs/PROTOCOL.md) against a live embedded gateway."""
from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import urllib.error
import urllib.request

import orjson
import pytest

from tests.e2e.conftest import EmbeddedService
from tests.support.clients import Reader, http_get, http_json, new_token, wait_all


def status_of(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_rest_api_shapes(embedded):
    articles = http_json(f"{embedded.base_url}/api/articles")
    assert {"id": "hello-claps", "title": "Hello, claps"} in articles
    session = http_json(f"{embedded.base_url}/api/session", "POST")
    assert set(session) == {"user", "token"} and session["token"].startswith(session["user"] + ".")
    assert http_json(f"{embedded.base_url}/api/articles/why-logs-win/claps") == {
        "article": "why-logs-win", "total": 0, "seq": 0, "epoch": 0
    }
    assert status_of(f"{embedded.base_url}/api/articles/never-published/claps") == 404
    assert status_of(f"{embedded.base_url}/api/articles/bad%20id/claps") == 400
    assert status_of(f"{embedded.base_url}/nothing-here") == 404
    assert status_of(f"{embedded.base_url}/api/articles", "DELETE") == 405
    assert status_of(f"{embedded.base_url}/healthz") == 200
    assert status_of(f"{embedded.base_url}/metrics") == 200


async def test_many_totals_in_one_read_answer_what_one_read_each_answers(embedded):
    base = embedded.base_url
    clapper = await Reader.open(embedded.ws_url, new_token(base))
    for article, count in (("hello-claps", 3), ("why-logs-win", 5)):
        await clapper.join(article)
        await clapper.clap(article, count, f"many-{article}")
    assert await clapper.wait_for(lambda r: r.totals.get("hello-claps") == 3 and r.totals.get("why-logs-win") == 5, 10)
    await clapper.close()

    one_each = [http_json(f"{base}/api/articles/{a}/claps") for a in ("why-logs-win", "hello-claps")]
    # The asked order, a repeated id once, an unpublished one named apart.
    many = http_json(f"{base}/api/claps?articles=why-logs-win,hello-claps,why-logs-win,never-published")
    assert many == {"totals": one_each, "not_found": ["never-published"]}
    assert [t["total"] for t in many["totals"]] == [5, 3]
    assert http_json(f"{base}/api/claps?articles=why-logs-win&articles=hello-claps")["totals"] == one_each

    hundred = ",".join(f"unpublished-{i}" for i in range(100))
    assert http_json(f"{base}/api/claps?articles={hundred}") == {"totals": [], "not_found": hundred.split(",")}
    for query in ("", "?articles=", f"?articles={hundred},one-more", "?articles=hello-claps,bad%20id"):
        status, body = http_get(f"{base}/api/claps{query}")
        assert (status, orjson.loads(body)["error"]) == (400, "bad_request"), query
    assert status_of(f"{base}/api/claps?articles=hello-claps", "POST") == 405


async def test_malformed_messages_get_errors_and_everyone_carries_on(embedded):
    bystander = await Reader.open(embedded.ws_url)
    await bystander.join("hello-claps")
    client = await Reader.open(embedded.ws_url, new_token(embedded.base_url))
    for bad in ["not json", "[]", '{"type":"clap","article":"a b","count":1,"id":"x"}', b"\x00binary"]:
        await client.ws.send(bad)
    await client.clap("hello-claps", 0, "zero")
    assert await client.wait_for(lambda r: len(r.errors) == 5, 10)
    assert [e["code"] for e in client.errors] == ["bad_request"] * 4 + ["bad_count"]
    assert client.errors[-1]["id"] == "zero"
    # The same connection still works, and so does everyone else's.
    await client.join("hello-claps")
    await client.clap("hello-claps", 2, "good")
    assert await wait_all([client, bystander], lambda r: r.totals.get("hello-claps") == 2, 10)
    assert "good" in client.acks
    await client.close()
    await bystander.close()


async def test_a_connection_may_join_a_bounded_number_of_rooms(embedded):
    embedded.register(*(f"room-{index}" for index in range(17)))
    client = await Reader.open(embedded.ws_url)
    for index in range(17):
        await client.join(f"room-{index}")
    assert await client.wait_for(lambda r: r.errors, 10)
    assert client.errors[0]["code"] == "too_many_rooms"
    await client.close()


def _raw_websocket(port: int, articles: list[str]) -> socket.socket:
    """A client that joins and then never reads: the slowest reader there is.

    Its receive buffer is made small before it connects, so the gateway's kernel buffer and then
    its own write buffer fill within seconds instead of megabytes.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response.split(b"\r\n")[0]
    for article in articles:
        payload = orjson.dumps({"type": "join", "article": article})
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    return sock


def metric(base_url: str, name: str) -> float:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


async def test_readers_that_never_read_do_not_slow_down_the_others(tmp_path, log_dir):
    # 16 rooms each (the most a connection may join), every room announced ~10 times a second:
    # the stalled sockets' buffers fill and the gateway holds one frame per room for each.
    # Small buffers (the same code path as the 64 KiB defaults) so they fill within a second.
    embedded = EmbeddedService(tmp_path / "data", log_dir, "slow-readers")
    embedded.start(SOCKET_SEND_BUFFER="4096", WRITE_BUFFER_HIGH="8192")
    rooms = [f"slow-readers-{n}" for n in range(16)]
    embedded.register(*rooms)
    stalled = [_raw_websocket(embedded.port, rooms) for _ in range(20)]
    fast = [await Reader.open(embedded.ws_url) for _ in range(5)]
    for reader in fast:
        for room in rooms:
            await reader.join(room)
    clappers = [await Reader.open(embedded.ws_url, new_token(embedded.base_url)) for _ in range(len(rooms))]
    rounds = 50  # one clap per room per round, 50 rounds: each room ends at exactly 50
    for round_no in range(rounds):
        for clapper, room in zip(clappers, rooms):
            await clapper.clap(room, 1, f"r{round_no}")
        await asyncio.sleep(0.12)
        if round_no % 10 == 9:
            # Every stalled reader is backlogged now, and stays so: its memory is bounded by
            # one frame per room, however long this goes on.
            assert metric(embedded.base_url, "gateway_backlogged_readers") == len(stalled)
    # Each stalled reader's held frame of each room was replaced many times over (once per window
    # after its buffer filled, ~40 windows): at least 10 times per reader and room.
    assert metric(embedded.base_url, "gateway_frames_conflated") >= len(stalled) * len(rooms) * 10
    assert await wait_all(fast, lambda r: all(r.totals.get(room) == rounds for room in rooms), 20)
    # The fast readers saw the count move all along (an update per window, not one at the end).
    assert all(r.counts_received >= len(rooms) * rounds // 4 for r in fast)
    assert all(r.out_of_order == 0 for r in fast)
    assert http_json(f"{embedded.base_url}/healthz")["connections"] == len(stalled) + len(fast) + len(clappers)
    for sock in stalled:
        sock.close()
    for client in fast + clappers:
        await client.close()
    embedded.stop()


def test_a_full_gateway_is_not_ready_and_refuses_websockets_clearly(tmp_path, log_dir):
    from tests.e2e.conftest import EmbeddedService

    service = EmbeddedService(tmp_path / "data", log_dir, name="full")
    service.start(MAX_CONNECTIONS="2")
    try:
        import websockets.sync.client as sync_client

        with sync_client.connect(service.ws_url), sync_client.connect(service.ws_url):
            assert status_of(f"{service.base_url}/readyz") == 503
            assert status_of(f"{service.base_url}/healthz") == 200
            with pytest.raises(Exception) as refused:
                with sync_client.connect(service.ws_url):
                    pass
            assert "503" in str(refused.value)
            assert "refusing websocket: at capacity" in service.process.log_text()
    finally:
        service.stop()


def readiness(url: str) -> tuple[int, dict]:
    status, body = http_get(url)
    return status, orjson.loads(body)


async def ready_within(url: str, timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        status, body = await asyncio.to_thread(readiness, url)
        if (status, body["status"], "near_floor" in body) == (200, "ok", False):
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)


async def test_a_room_near_its_cadence_floor_makes_the_gateway_full_until_it_is_not(tmp_path, log_dir):
    # A floor no pass can meet (100,000 updates/s: 8 us a pass) and chunks of 5 make a room of 12
    # readers a large room near its floor as soon as a total is written round it.
    service = EmbeddedService(tmp_path / "data", log_dir, name="floor")
    service.start(CLAP_CADENCE_FLOOR="100000", CLAP_FANOUT_CHUNK="5")
    readers: list[Reader] = []
    try:
        article = "why-logs-win"
        readers = await Reader.open_joined(service.ws_url, article, 12)
        # Opening the room writes its stored total round it, a pass if more than a chunk of readers
        # joined by then (on a loaded machine they may have): ready once that pass is 2 s old.
        assert await ready_within(f"{service.base_url}/readyz", 5)
        clapper = await Reader.open(service.ws_url, new_token(service.base_url))
        await clapper.clap(article, 3, "floor-1")
        assert await wait_all(readers, lambda r: r.totals.get(article) == 3, 10)
        status, body = await asyncio.to_thread(readiness, f"{service.base_url}/readyz")
        assert (status, body["status"]) == (503, "full")
        assert [(room["article"], room["readers"]) for room in body["near_floor"]] == [(article, 12)]
        # Still served: a reader that reaches a full gateway anyway is taken (only the cap refuses).
        late = await Reader.open(service.ws_url)
        await late.join(article)
        assert await late.wait_for(lambda r: r.totals.get(article) == 3, 10)
        readers.append(late)
        # No pass for 2 s says nothing about now: ready again.
        await asyncio.sleep(2.5)
        status, body = await asyncio.to_thread(readiness, f"{service.base_url}/readyz")
        assert (status, body["status"], "near_floor" in body) == (200, "ok", False)
        await clapper.close()
    finally:
        for reader in readers:
            await reader.close()
        service.stop()
