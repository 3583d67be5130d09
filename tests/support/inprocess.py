"""The embedded service composed inside the test's own event loop.

What `python -m gateway` builds in the embedded mode (file log, SQLite, in-process feed, the
processing loop), but with the gateways' ports wrapped by the test: a log that fails or holds
appends, a store that goes away. Several gateways may share one data set, as the gateways of
one deployment share Kafka and Cassandra.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from core.messages import ClapRecorded, CountChanged
from core.ports import ClapLog, CounterStore
from embedded.feed import InMemoryCountFeed
from embedded.file_log import FileClapLog
from embedded.processor import EmbeddedProcessor
from embedded.sqlite_store import SqliteCounterStore
from gateway.config import GatewayConfig
from gateway.presence import LocalPresenceBus
from gateway.server import Gateway
from tests.support.processes import free_port

SECRET = b"in-process-secret"


class FailingAppends:
    """A clap log whose first ``failures`` appends raise, as a full or broken disk would."""

    def __init__(self, inner: ClapLog, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.refused: list[str] = []

    async def append(self, clap: ClapRecorded) -> int:
        if len(self.refused) < self.failures:
            self.refused.append(clap.clap_id)
            raise OSError(28, "No space left on device (injected)")
        return await self.inner.append(clap)

    async def close(self) -> None: ...


class SlowAppends:
    """A clap log that takes ``delay_s`` to make each event durable, as a slow disk or a
    replicated produce would; the event is visible to the processor only once it is durable."""

    def __init__(self, inner: ClapLog, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    async def append(self, clap: ClapRecorded) -> int:
        await asyncio.sleep(self.delay_s)
        return await self.inner.append(clap)

    async def close(self) -> None: ...


class HeldAcks:
    """A clap log that, while ``holding``, makes appends durable but never returns: a gateway
    that dies between the log and the ack. ``release`` lets the held appends return."""

    def __init__(self, inner: ClapLog) -> None:
        self.inner = inner
        self.holding = False
        self.held: dict[str, int] = {}  # clap id -> count, of the appends held
        self.release = asyncio.Event()

    async def append(self, clap: ClapRecorded) -> int:
        offset = await self.inner.append(clap)
        if self.holding:
            self.held[clap.clap_id] = clap.count
            await self.release.wait()
        return offset

    async def close(self) -> None: ...


class SwitchableStore:
    """A counter store that can be made to fail every read, as a Cassandra that went away."""

    def __init__(self, inner: CounterStore) -> None:
        self.inner = inner
        self.down = False
        self.failed_reads = 0

    def _check(self) -> None:
        if self.down:
            self.failed_reads += 1
            raise ConnectionError("NoHostAvailable (injected)")

    async def write(self, totals) -> None:
        await self.inner.write(totals)

    async def read(self, article: str) -> CountChanged | None:
        self._check()
        return await self.inner.read(article)

    async def read_mine(self, article: str, user: str) -> int:
        self._check()
        return await self.inner.read_mine(article, user)

    async def close(self) -> None: ...


class InProcessService:
    def __init__(
        self,
        data_dir: Path,
        *,
        gateways: int = 1,
        wrap_log: Callable[[int, FileClapLog], ClapLog] = lambda index, log: log,
        wrap_store: Callable[[int, SqliteCounterStore], CounterStore] = lambda index, store: store,
        **config: object,
    ) -> None:
        self.log = FileClapLog(data_dir / "claps.log")
        self.store = SqliteCounterStore(data_dir / "counts.sqlite3")
        self.feed = InMemoryCountFeed()
        self.presence_bus = LocalPresenceBus()  # the gateways of one deployment hear each other
        self.processor = EmbeddedProcessor(self.log, self.store, self.feed, window_ms=100, epoch=1)
        ports = [free_port() for _ in range(gateways)]
        urls = tuple(f"http://127.0.0.1:{port}" for port in ports)
        base = GatewayConfig(
            port=0, secret=SECRET, claps_per_second=1000, clap_burst=1000,
            identities_per_minute=100_000, identity_burst=100_000,  # tests open many identities
            # A page of one gateway connects to the others: the gateways of one deployment.
            gateway_urls=urls, allowed_origins=frozenset(urls),
        )
        self.logs = [wrap_log(index, self.log) for index in range(gateways)]
        self.stores = [wrap_store(index, self.store) for index in range(gateways)]
        self.gateways = [
            Gateway(
                replace(base, port=port, name=f"gateway-{index + 1}", **config), self.logs[index], self.stores[index],
                self.feed, presence_bus=self.presence_bus,
            )
            for index, port in enumerate(ports)
        ]
        self._processing: asyncio.Task[None] | None = None
        self._stopped: set[int] = set()

    def url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.gateways[index].config.port}"

    def ws_url(self, index: int = 0) -> str:
        return f"ws://127.0.0.1:{self.gateways[index].config.port}/ws"

    async def start(self) -> InProcessService:
        self._processing = asyncio.create_task(self.processor.run(), name="embedded-processor")
        await self.processor.ready.wait()
        for gateway in self.gateways:
            await gateway.start()
        return self

    async def pause_processor(self) -> None:
        """Stop the processing loop, as a dead processor: claps are still acked, none is counted,
        and the gateways hear no counting status (call it while no clap is being processed)."""
        assert self._processing is not None
        self._processing.cancel()
        await asyncio.gather(self._processing, return_exceptions=True)

    async def resume_processor(self) -> None:
        """Start the processing loop again: it resumes after its last committed offset."""
        self._processing = asyncio.create_task(self.processor.run(), name="embedded-processor")

    async def stop_gateway(self, index: int) -> None:
        """Stop one gateway as a deployment's rollout would: its sockets close, the others stay."""
        self._stopped.add(index)
        await self.gateways[index].stop()

    async def stop(self) -> None:
        for log in self.logs:
            if isinstance(log, HeldAcks):
                log.release.set()
        for index in range(len(self.gateways)):
            if index not in self._stopped:
                await self.stop_gateway(index)
        assert self._processing is not None
        self._processing.cancel()
        await asyncio.gather(self._processing, return_exceptions=True)
        await self.log.close()
        await self.store.close()

    def logged_ids(self) -> list[str]:
        """Every clap id in the log, in log order (a retried id appears once per append)."""
        with open(self.log.path, "rb") as f:
            return [ClapRecorded.from_json(line).clap_id for line in f if line.strip()]
