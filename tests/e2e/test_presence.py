"""'N reading now' through the public contract: readers of an article over every gateway.

Two gateways of one deployment in this process (tests/support/inprocess.py), hearing each other
over the in-process bus; the distributed run over Kafka is tests/integration/test_presence_pipeline.py.
"""
from __future__ import annotations

import asyncio
import time

from tests.support.clients import Reader, http_json
from tests.support.inprocess import InProcessService


async def test_readers_on_every_gateway_are_summed_and_told_within_two_seconds(tmp_path):
    service = await InProcessService(tmp_path, gateways=2).start()
    try:
        on_first = [await Reader.open(service.ws_url(0)) for _ in range(3)]
        on_second = [await Reader.open(service.ws_url(1)) for _ in range(2)]
        for reader in on_first + on_second:
            await reader.join("hello-claps")
        bystander = await Reader.open(service.ws_url(1))
        await bystander.join("slow-readers")
        everyone = on_first + on_second
        assert all([await r.wait_for(lambda r: r.reading.get("hello-claps") == 5, 4) for r in everyone])
        # A list of articles (join without mine) is not reading them.
        lister = await Reader.open(service.ws_url(0))
        await lister.ws.send('{"type":"join","article":"hello-claps","mine":false}')
        assert await lister.wait_for(lambda r: r.reading.get("hello-claps") == 5, 4)
        assert await bystander.wait_for(lambda r: r.reading.get("slow-readers") == 1, 4)
        assert "hello-claps" not in bystander.reading  # other rooms hear nothing of it

        # Readers leave (one closes, one leaves the room): everyone left is told within 2 s.
        left_at = time.monotonic()
        await on_first[0].close()
        await on_second[0].ws.send('{"type":"leave","article":"hello-claps"}')
        stayed = [on_first[1], on_first[2], on_second[1], lister]
        assert all([await r.wait_for(lambda r: r.reading.get("hello-claps") == 3, 4) for r in stayed])
        assert time.monotonic() - left_at < 2.5
        for reader in [*stayed, on_second[0], bystander]:
            await reader.close()
    finally:
        await service.stop()


async def test_a_crowd_joining_costs_a_message_per_room_per_second_not_one_per_join(tmp_path):
    service = await InProcessService(tmp_path, gateways=2).start()
    try:
        watcher = await Reader.open(service.ws_url(0))
        await watcher.join("why-logs-win")
        assert await watcher.wait_for(lambda r: r.reading.get("why-logs-win") == 1, 4)
        crowd_started = time.monotonic()
        crowd = []
        for index in range(40):  # 40 joins over about 2 s, on both gateways
            reader = await Reader.open(service.ws_url(index % 2))
            await reader.join("why-logs-win")
            crowd.append(reader)
            await asyncio.sleep(0.05)
        assert await watcher.wait_for(lambda r: r.reading.get("why-logs-win") == 41, 4)
        spent = time.monotonic() - crowd_started
        during = [m for m in watcher.presence_messages if m[0] >= crowd_started]
        # At most one message per announcement interval (1 s) while the crowd came, plus one.
        assert len(during) <= int(spent) + 1, (len(during), spent)
        assert len(during) < 40
        for reader in [watcher, *crowd]:
            await reader.close()
    finally:
        await service.stop()


async def test_a_stopped_gateway_s_readers_stop_counting(tmp_path):
    service = await InProcessService(tmp_path, gateways=2).start()
    try:
        staying = await Reader.open(service.ws_url(0))
        await staying.join("hello-claps")
        going = [await Reader.open(service.ws_url(1)) for _ in range(3)]
        for reader in going:
            await reader.join("hello-claps")
        assert await staying.wait_for(lambda r: r.reading.get("hello-claps") == 4, 4)
        await service.stop_gateway(1)
        assert await staying.wait_for(lambda r: r.reading.get("hello-claps") == 1, 4)
        assert (await asyncio.to_thread(http_json, f"{service.url(0)}/healthz"))["status"] == "ok"
        await staying.close()
    finally:
        await service.stop()
