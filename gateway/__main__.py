"""python -m gateway: the composition root. CLAP_MODE picks the adapters; embedded is the default.

- embedded: the gateway, the processing loop and the projection in this one process, over a
  durable on-disk clap log and SQLite (no servers to install).
- distributed: this process is one gateway among many, over Kafka and Cassandra; the Faust
  processor and the projector run as their own processes.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from gateway.articles import SEEDED
from gateway.catalogue import Catalogue, EmbeddedArticles, KafkaCatalogueFeed
from gateway.config import ADMIN_TOKEN_FILE, GatewayConfig
from gateway.server import Gateway
from observability.heap import HeapSteward
from observability.logs import setup_logging

log = logging.getLogger("gateway")


async def run(config: GatewayConfig, stop: asyncio.Event) -> None:
    async with AsyncExitStack() as stack:
        background: list[asyncio.Task] = []
        catalogue = Catalogue()
        article_admin: EmbeddedArticles | None = None
        presence_bus = None  # embedded: the gateway's own in-process bus
        if config.mode == "embedded":
            from embedded.feed import InMemoryCountFeed
            from embedded.file_log import FileClapLog
            from embedded.processor import EmbeddedProcessor
            from embedded.sqlite_store import SqliteCounterStore

            data = Path(config.data_dir)
            catalogue = Catalogue(SEEDED)
            article_admin = EmbeddedArticles(catalogue, data / "articles.jsonl")
            article_admin.load()
            clap_log = FileClapLog(data / "claps.log")
            store = SqliteCounterStore(data / "counts.sqlite3")
            feed = InMemoryCountFeed()
            stack.push_async_callback(clap_log.close)
            stack.push_async_callback(store.close)
            processor = EmbeddedProcessor(clap_log, store, feed, window_ms=config.window_ms, epoch=config.epoch)
            background.append(asyncio.create_task(processor.run(), name="embedded-processor"))
            await processor.ready.wait()
        elif config.mode == "distributed":
            from gateway.feed import PartitionedCountFeed
            from gateway.kafka_adapters import KafkaClapLog, KafkaPresenceBus
            from projector.cassandra_store import CassandraCounterStore

            clap_log = KafkaClapLog(config.kafka_bootstrap, config.clap_topic, max_batch_bytes=config.clap_log_batch_bytes)
            await clap_log.start()
            stack.push_async_callback(clap_log.close)
            store = CassandraCounterStore(
                config.cassandra_hosts, config.cassandra_port, config.cassandra_keyspace,
                replication_factor=config.cassandra_replication_factor,
            )
            await store.start()
            stack.push_async_callback(store.close)
            feed = PartitionedCountFeed(config.kafka_bootstrap, config.counts_topic)
            stack.push_async_callback(feed.close)
            presence_bus = KafkaPresenceBus(config.kafka_bootstrap, config.presence_topic)
            stack.push_async_callback(presence_bus.close)
            # Serve only once every article published before this start is known.
            articles_feed = KafkaCatalogueFeed(config.kafka_bootstrap, config.articles_topic, catalogue)
            stack.push_async_callback(articles_feed.close)
            await articles_feed.start()
            background.append(asyncio.create_task(articles_feed.follow(), name="catalogue"))
        else:
            raise SystemExit(f"CLAP_MODE must be embedded or distributed, not {config.mode!r}")

        gateway = Gateway(
            config, clap_log, store, feed, catalogue=catalogue, article_admin=article_admin, presence_bus=presence_bus
        )
        await gateway.start()
        stack.push_async_callback(gateway.stop)
        # Not vital: without it CPython's own collector runs, with its longer pauses. With
        # CLAP_GC_FREEZE_EVERY_S=0 it only measures CPython's pauses.
        heap = asyncio.create_task(heap_steward(gateway, config).run(), name="heap")
        heap.add_done_callback(_log_heap_end)
        stack.push_async_callback(_cancel, heap)
        log.info("clap service (%s) ready at http://%s:%d/", config.mode, config.host, gateway.port)
        if article_admin is not None:
            where = "CLAP_ADMIN_TOKEN" if os.environ.get("CLAP_ADMIN_TOKEN") else Path(config.data_dir) / ADMIN_TOKEN_FILE
            log.info("admin token (PUT /api/admin/articles/ID?title=T): %s", where)
        waiter = asyncio.create_task(stop.wait())
        # Crash-only: if the feed, the processing loop or another vital task ends, the process
        # exits non-zero and its supervisor restarts it, rather than serving stale counts.
        vital = [*background, *gateway.background]
        done, _ = await asyncio.wait([waiter, *vital], return_when=asyncio.FIRST_COMPLETED)
        failed = [task for task in done if task is not waiter]
        for task in failed:
            error = None if task.cancelled() else task.exception()
            log.critical("vital task %s ended: %r; exiting now", task.get_name(), error, exc_info=error)
        if failed:
            # Crash, do not wind down: every acked clap is already durable (Kafka, or the fsynced
            # log and SQLite's atomic commits), so nothing is lost by exiting at once, while a
            # graceful shutdown could hang on thousands of sockets and serve stale counts meanwhile.
            logging.shutdown()
            os._exit(70)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        waiter.cancel()
    log.info("stopped cleanly")


def heap_steward(gateway: Gateway, config: GatewayConfig) -> HeapSteward:
    metrics = gateway.metrics
    pauses = {generation: metrics.gc_pause.labels(generation=str(generation)) for generation in (0, 1, 2)}
    return HeapSteward(
        open_connections=lambda: len(gateway.readers),
        closed_connections=lambda: gateway.connections_closed,
        freeze_every_s=config.gc_freeze_every_s,
        sweep_after_closed=config.gc_sweep_after_closed,
        sweep_every_s=config.gc_sweep_every_s,
        on_pause=lambda generation, seconds: pauses[generation].observe(seconds),
        on_sweep=lambda seconds, freed: metrics.gc_sweeps.inc(),
    )


def _log_heap_end(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("heap steward stopped; CPython's own collector runs from now on", exc_info=task.exception())


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def main() -> None:
    config = GatewayConfig.from_env()
    setup_logging("gateway", config.log_format)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    config = config.with_stored_credentials()
    sys.setswitchinterval(config.gil_switch_interval_s)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(config, stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
