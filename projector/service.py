"""Consume numbered totals, keep the newest per article in each batch, write them, then commit.

At-least-once: offsets are committed only after Cassandra acknowledged the rows, and since a
row is an absolute total at a position, writing it again after a crash changes nothing.
"""
from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer

from core.messages import CountChanged, newest_per_article
from core.ports import CounterStore
from projector.config import ProjectorConfig

log = logging.getLogger("projector")


class Projector:
    def __init__(self, config: ProjectorConfig, store: CounterStore) -> None:
        self.config = config
        self.store = store
        self.written = 0

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        consumer = AIOKafkaConsumer(
            self.config.counts_topic,
            bootstrap_servers=self.config.kafka_bootstrap,
            group_id=self.config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        log.info("projector consuming %s as group %s", self.config.counts_topic, self.config.group_id)
        try:
            while stop is None or not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self.config.max_batch)
                updates = []
                for records in batches.values():
                    for record in records:
                        try:
                            updates.append(CountChanged.from_json(record.value))
                        except (ValueError, KeyError, TypeError):
                            log.warning("skipping malformed count at %s:%d", record.topic, record.offset)
                if not batches:
                    continue
                rows = newest_per_article(updates)
                await self._write_with_retry(rows)
                await consumer.commit()
                self.written += len(rows)
        finally:
            await consumer.stop()

    async def _write_with_retry(self, rows: list[CountChanged]) -> None:
        delay = 0.1
        while True:
            try:
                await self.store.write(rows)
                return
            except Exception as error:  # Cassandra unavailable: hold the batch, never skip it
                log.warning("writing %d totals failed (%r); retrying in %.1fs", len(rows), error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
