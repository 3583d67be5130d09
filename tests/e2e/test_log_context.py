"""A log line about a clap names the clap and its article (as JSON fields under LOG_FORMAT=json)."""
from __future__ import annotations

import asyncio

from tests.support.clients import Reader, new_token
from tests.support.inprocess import FailingAppends, InProcessService


async def test_a_refused_clap_is_logged_with_its_id_and_article(tmp_path, caplog):
    service = await InProcessService(tmp_path, wrap_log=lambda index, log: FailingAppends(log, 1)).start()
    try:
        clapper = await Reader.open(service.ws_url(), await asyncio.to_thread(new_token, service.url()))
        with caplog.at_level("WARNING", logger="gateway"):
            await clapper.clap("hello-claps", 2, "logged-1")
            assert await clapper.wait_for(lambda r: len(r.errors) == 1, 10)
        refused = [r for r in caplog.records if getattr(r, "clap_id", None) == "logged-1"]
        assert [(r.article, r.levelname) for r in refused] == [("hello-claps", "WARNING")]
        await clapper.close()
    finally:
        await service.stop()
