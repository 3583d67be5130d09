"""A gateway whose count feed dies says so and stops serving stale counts."""
from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from embedded.file_log import FileClapLog
from embedded.sqlite_store import SqliteCounterStore
from gateway.config import GatewayConfig
from gateway.server import Gateway


class BrokenFeed:
    partitions = 1

    def __init__(self) -> None:
        self.die = asyncio.Event()

    async def publish(self, updates) -> None: ...

    async def subscribe(self):
        async def updates():
            await self.die.wait()
            raise ConnectionError("the fan-out topic went away")
            yield  # pragma: no cover

        return updates()

    def follow(self, article) -> None: ...

    def unfollow(self, article) -> None: ...

    async def followed(self, article) -> None: ...

    async def close(self) -> None: ...


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def test_health_turns_503_when_the_feed_dies(tmp_path):
    feed = BrokenFeed()
    gateway = Gateway(
        GatewayConfig(port=0, secret=b"s"),
        FileClapLog(tmp_path / "claps.log"),
        SqliteCounterStore(tmp_path / "counts.sqlite3"),
        feed,
    )
    await gateway.start()
    try:
        url = f"http://127.0.0.1:{gateway.port}/healthz"
        assert await asyncio.to_thread(status, url) == 200
        feed.die.set()
        await asyncio.sleep(0.1)
        assert any(task.done() for task in gateway.background)
        assert await asyncio.to_thread(status, url) == 503
    finally:
        await gateway.stop()
