"""The embedded service says when counts are catching up: silence while its processing loop is
stopped, "catching_up" while it replays the log after a restart, "live" once it has."""
from __future__ import annotations

import asyncio
import time

from core.messages import CATCHING_UP, LIVE, CountingStatus
from tests.support.clients import Reader, http_json, new_token
from tests.support.inprocess import InProcessService

STALE_S = 5  # the gateway's default (COUNTING_STALE_S)


async def statuses_from(updates, count: int, timeout_s: float) -> list[str]:
    said: list[str] = []

    async def take() -> None:
        async for update in updates:
            if isinstance(update, CountingStatus):
                said.append(update.state)
                if len(said) == count:
                    return

    await asyncio.wait_for(take(), timeout_s)
    return said


async def test_readers_are_told_catching_up_while_the_loop_is_stopped_and_live_once_it_has_replayed(tmp_path):
    service = await InProcessService(tmp_path).start()
    try:
        reader = await Reader.open(service.ws_url())
        await reader.join("hello-claps")
        clapper = await Reader.open(service.ws_url(), await asyncio.to_thread(new_token, service.url()))
        await clapper.clap("hello-claps", 2, "before")
        assert await reader.wait_for(lambda r: r.totals.get("hello-claps") == 2, 10)

        await service.pause_processor()
        stopped = time.monotonic()
        await clapper.clap("hello-claps", 5, "during")
        assert await clapper.wait_for(lambda r: "during" in r.acks, 10)
        assert await reader.wait_for(lambda r: r.counting.get("hello-claps") == CATCHING_UP, STALE_S + 2)
        assert reader.counting_messages[0][0] - stopped <= STALE_S + 2
        assert reader.totals["hello-claps"] == 2
        readyz = await asyncio.to_thread(http_json, f"{service.url()}/readyz")
        assert (readyz["status"], readyz["counting"]["state"], readyz["counting"]["articles"]) == ("ok", CATCHING_UP, 1)
        assert [p["partition"] for p in readyz["counting"]["partitions"]] == [0]

        # Restarted, the loop first replays the clap it has not applied, and says so meanwhile.
        feed = await service.feed.subscribe()
        await service.resume_processor()
        assert await statuses_from(feed, 2, 10) == [CATCHING_UP, LIVE]
        assert await reader.wait_for(
            lambda r: r.counting.get("hello-claps") == LIVE and r.totals.get("hello-claps") == 7, 10)
        assert [state for _, _, state in reader.counting_messages] == [CATCHING_UP, LIVE]
        readyz = await asyncio.to_thread(http_json, f"{service.url()}/readyz")
        assert readyz["counting"] == {"state": LIVE}
        await feed.aclose()
        for client in (reader, clapper):
            await client.close()
    finally:
        await service.stop()
