"""When the counter store or the clap log is away, the gateway says so and readers keep reading.

The store going away is a store adapter whose reads raise (what the gateway sees of a Cassandra
that is down); the log going away is a file log whose appends raise, and a Kafka clap log
pointed at a closed port.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from core.messages import ClapRecorded, CountChanged
from gateway.kafka_adapters import KafkaClapLog
from tests.support.clients import Reader, http_get, new_token
from tests.support.inprocess import FailingAppends, InProcessService, SwitchableStore
from tests.support.processes import free_port


async def get(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, url, 10)


async def get_json(url: str) -> tuple[int, dict]:
    status, body = await get(url)
    return status, json.loads(body)


@pytest.fixture
async def flaky_store(tmp_path):
    service = await InProcessService(tmp_path, wrap_store=lambda index, store: SwitchableStore(store)).start()
    yield service
    await service.stop()


async def clap_and_wait(service: InProcessService, article: str, count: int) -> str:
    token = await asyncio.to_thread(new_token, service.url())
    clapper = await Reader.open(service.ws_url(), token)
    await clapper.clap(article, count, f"{article}-1")
    assert await clapper.wait_for(lambda r: r.acks, 10)
    await clapper.close()
    for _ in range(100):  # counted and committed: the store has it
        if (stored := await service.store.read(article)) is not None and stored.total == count:
            return token
        await asyncio.sleep(0.05)
    raise AssertionError(f"{article} never reached {count} in the store")


async def test_with_the_store_away_pages_and_rest_answer_the_live_total_or_503(flaky_store):
    service, store = flaky_store, flaky_store.stores[0]
    await clap_and_wait(service, "hello-claps", 6)
    reader = await Reader.open(service.ws_url())
    await reader.join("hello-claps")
    assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 6, 10)

    store.down = True
    base = service.url()
    assert await get_json(f"{base}/api/articles/hello-claps/claps") == (200, {"article": "hello-claps", "total": 6, "seq": 1, "epoch": 1})
    status, page = await get(f"{base}/articles/hello-claps")
    assert status == 200 and 'data-total="6"' in page
    # No reader of it here, so no live total: a clear 503, never a zero.
    assert await get_json(f"{base}/api/articles/why-logs-win/claps") == (503, {
        "error": "unavailable",
        "message": "the count of 'why-logs-win' cannot be read now (counter store unavailable); retry shortly",
    })
    status, page = await get(f"{base}/articles/why-logs-win")
    assert status == 503 and "cannot be read right now" in page
    # Many at once: the live total alone is answered; with one that has none, the whole is a 503.
    assert await get_json(f"{base}/api/claps?articles=hello-claps") == (200, {
        "totals": [{"article": "hello-claps", "total": 6, "seq": 1, "epoch": 1}], "not_found": []})
    status, doc = await get_json(f"{base}/api/claps?articles=hello-claps,why-logs-win")
    assert (status, doc["error"]) == (503, "unavailable") and "why-logs-win" in doc["message"]
    status, ready = await get_json(f"{base}/readyz")
    assert (status, ready["status"]) == (503, "degraded")
    assert [r.split(" since ")[0] for r in ready["reasons"]] == ["counter store unavailable"]
    assert ready["reasons"][0].endswith("ConnectionError: NoHostAvailable (injected)")
    assert (await get_json(f"{base}/healthz"))[0] == 200  # alive: a restart would not help

    store.down = False
    assert await get_json(f"{base}/api/articles/why-logs-win/claps") == (200, {"article": "why-logs-win", "total": 0, "seq": 0, "epoch": 0})
    status, ready = await get_json(f"{base}/readyz")
    assert (status, ready["status"], "reasons" in ready) == (200, "ok", False)
    await reader.close()


async def test_a_room_whose_first_read_fails_retries_and_never_shows_a_zero(flaky_store):
    service, store = flaky_store, flaky_store.stores[0]
    token = await clap_and_wait(service, "counting-at-scale", 9)
    store.down = True
    reader = await Reader.open(service.ws_url(), token)
    await reader.join("counting-at-scale")
    for _ in range(100):  # the first read and its first retry, 0.25 s later, both fail
        if store.failed_reads >= 2:
            break
        await asyncio.sleep(0.02)
    assert store.failed_reads >= 2
    assert (reader.counts_received, reader.mine) == (0, {})
    store.down = False
    assert await reader.wait_for(lambda r: r.totals.get("counting-at-scale") == 9, 10)
    assert await reader.wait_for(lambda r: r.mine.get("counting-at-scale") == 9, 10)
    assert reader.counts_received == 1  # the stored 9, and nothing before it
    await reader.close()


async def test_a_failing_log_refuses_claps_as_unavailable_and_readyz_says_why(tmp_path):
    service = await InProcessService(tmp_path, wrap_log=lambda index, log: FailingAppends(log, 3)).start()
    try:
        reader = await Reader.open(service.ws_url())
        await reader.join("hello-claps")
        assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 0, 10)
        clapper = await Reader.open(service.ws_url(), await asyncio.to_thread(new_token, service.url()))
        for attempt in range(3):
            await clapper.clap("hello-claps", 2, "f1")
            assert await clapper.wait_for(lambda r: len(r.errors) == attempt + 1, 10)
        assert clapper.errors == [{"type": "error", "code": "unavailable", "id": "f1",
                                   "message": "the clap was not confirmed; retry with the same id"}] * 3
        status, ready = await get_json(f"{service.url()}/readyz")
        assert (status, ready["status"]) == (503, "degraded")
        assert [r.split(" since ")[0] for r in ready["reasons"]] == ["clap log unavailable"]
        assert ready["reasons"][0].endswith("No space left on device (injected)")

        await clapper.clap("hello-claps", 2, "f1")  # the same id once the log takes it
        assert await clapper.wait_for(lambda r: "f1" in r.acks, 10)
        assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 2, 10)
        assert service.logged_ids() == ["f1"]
        assert (await get_json(f"{service.url()}/readyz"))[0] == 200
        await reader.close()
        await clapper.close()
    finally:
        await service.stop()


class NeverConfirms:
    """A clap log whose appends never return: a disk or a broker that hangs."""

    async def append(self, clap: ClapRecorded) -> int:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None: ...


async def test_an_append_that_hangs_is_answered_unavailable_after_the_append_timeout(tmp_path):
    service = await InProcessService(tmp_path, wrap_log=lambda index, log: NeverConfirms(), append_timeout_s=0.5).start()
    try:
        clapper = await Reader.open(service.ws_url(), await asyncio.to_thread(new_token, service.url()))
        started = time.monotonic()
        await clapper.clap("hello-claps", 1, "h1")
        assert await clapper.wait_for(lambda r: r.errors, 10)
        waited = time.monotonic() - started
        assert [(e["code"], e["id"]) for e in clapper.errors] == [("unavailable", "h1")]
        assert 0.5 <= waited < 0.5 + 2.0  # the bound, plus this shared machine's scheduling slack
        await clapper.close()
    finally:
        await service.stop()


async def test_with_kafka_away_claps_get_unavailable_within_the_bound_and_readers_stay(tmp_path):
    clap_log = KafkaClapLog(f"127.0.0.1:{free_port()}", "claps")  # nothing listens there
    await clap_log.start()  # a gateway starts anyway: it has readers to serve
    service = await InProcessService(tmp_path, wrap_log=lambda index, log: clap_log).start()
    try:
        bound = service.gateways[0].config.append_timeout_s
        assert bound == 5.0  # the documented default (docs/PROTOCOL.md)
        reader = await Reader.open(service.ws_url())
        await reader.join("hello-claps")
        assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 0, 10)
        clapper = await Reader.open(service.ws_url(), await asyncio.to_thread(new_token, service.url()))
        started = time.monotonic()
        await clapper.clap("hello-claps", 3, "k1")
        assert await clapper.wait_for(lambda r: r.errors, bound + 5)
        assert time.monotonic() - started <= bound + 1.0
        assert [(e["code"], e["id"]) for e in clapper.errors] == [("unavailable", "k1")]
        status, ready = await get_json(f"{service.url()}/readyz")
        assert (status, ready["status"]) == (503, "degraded")
        assert [r.split(" since ")[0] for r in ready["reasons"]] == ["clap log unavailable"]
        # Readers are still connected and still get totals.
        await service.feed.publish([CountChanged("hello-claps", 5, 5, 10, 1, 0)])
        assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 5, 10)
        await reader.close()
        await clapper.close()
    finally:
        await service.stop()
        await clap_log.close()
