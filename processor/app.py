"""The Faust app: claps in, numbered per-article totals out to the fan-out topic.

Delivery is at-least-once, made safe by ``core.ledger``: every state record remembers the
highest offset it absorbed, so events re-read after a crash count once. Faust's exactly_once
mode is not used (it has open duplicate bugs upstream) and is not needed.

Events are taken in batches (``take_events``) and each batch is applied through the pure core;
all of a batch's totals are sent before Faust acks its events, and Faust flushes its producer
before it commits offsets, so an announced total is never older than the committed offsets.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

import faust

from core.ledger import ArticleTally, UserClaps
from core.messages import ClapRecorded
from core.partitioning import partition_for_key
from core.processing import CatchUp, ClapProcessor
from processor.config import ProcessorConfig
from processor.readiness import add_ready_page
from processor.state_store import faust_store_url, worker_state_dir

log = logging.getLogger("processor")

T = TypeVar("T")


def article_partitioner(key: bytes, all_partitions: list[int], available: list[int]) -> int:
    return all_partitions[partition_for_key(key, len(all_partitions))]


class BatchedTable(MutableMapping[str, T], Generic[T]):
    """A Faust table (raw byte keys, JSON values) seen as a mapping of str keys to core records.

    Writes are held until :meth:`write_back`, which the agent calls once per batch, before the
    batch's totals are sent and its events acked: a key changed by many events of a batch costs
    one changelog message, not one per event.
    """

    def __init__(self, table: faust.Table, decode: Callable[[dict[str, Any]], T], encode: Callable[[T], dict[str, Any]]) -> None:
        self.table, self.decode, self.encode = table, decode, encode
        self.held: dict[str, T] = {}

    def __getitem__(self, key: str) -> T:
        if key in self.held:
            return self.held[key]
        doc = self.table.get(key.encode())
        if doc is None:
            raise KeyError(key)
        return self.decode(doc)

    def __setitem__(self, key: str, value: T) -> None:
        self.held[key] = value

    def __delitem__(self, key: str) -> None:
        self.held.pop(key, None)
        self.table.pop(key.encode(), None)

    def __iter__(self) -> Iterator[str]:
        keys = {key.decode() for key in self.table}
        return iter(keys | self.held.keys())

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def write_back(self) -> None:
        for key, value in self.held.items():
            self.table[key.encode()] = self.encode(value)
        self.held.clear()


config = ProcessorConfig.from_env()

app = faust.App(
    config.app_id,
    broker=f"kafka://{config.kafka_bootstrap}",
    # Tables on disk, one directory per worker: a restart replays only the changelog written
    # since (processor/state_store.py). Standbys keep a copy of other workers' partitions.
    store=faust_store_url(config.store),
    datadir=worker_state_dir(config.state_path),
    table_standby_replicas=config.standby_replicas,
    # A dead worker's partitions move after the session timeout; a restarted one with the same
    # instance id takes its own back at once (static membership).
    broker_session_timeout=config.session_timeout_s,
    broker_heartbeat_interval=config.heartbeat_interval_s,
    consumer_group_instance_id=config.group_instance_id,
    topic_partitions=config.partitions,
    topic_replication_factor=config.replication_factor,
    producer_partitioner=article_partitioner,
    producer_acks=-1,
    processing_guarantee="at_least_once",
    # Faust's web server answers liveness probes (deploy/k8s); one port per worker on a host.
    web_enabled=True,
    web_bind=config.web_host,
    web_port=config.web_port,
    consumer_auto_offset_reset="earliest",
    stream_wait_empty=True,
)
add_ready_page(app)  # GET /ready: 200 once recovery is complete (processor/readiness.py)

claps_topic = app.topic(config.clap_topic, key_serializer="raw", value_serializer="raw", partitions=config.partitions)
counts_topic = app.topic(config.counts_topic, key_serializer="raw", value_serializer="raw", partitions=config.partitions)

# use_partitioner: table keys are routed by ``article_partitioner``, which sends "article:user"
# to the article's own partition, so every table stays co-partitioned with the clap topic.
# key_type=bytes keeps keys raw on the changelog (a JSON-quoted key would hash differently).
users_table = app.Table("user-claps", partitions=config.partitions, key_type=bytes, use_partitioner=True)
tallies_table = app.Table("article-tallies", partitions=config.partitions, key_type=bytes, use_partitioner=True)

users = BatchedTable(users_table, UserClaps.from_dict, UserClaps.to_dict)
tallies = BatchedTable(tallies_table, ArticleTally.from_dict, ArticleTally.to_dict)
core = ClapProcessor(
    users,
    tallies,
    window_ms=config.window_ms,
    epoch=config.epoch,
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


catch_up = CatchUp(config.catch_up_lag)


# The newest offset applied per clap partition this worker owns; forgotten on revocation, so
# a partition handed back later is measured afresh.
applied_offsets: dict[Any, int] = {}


@app.on_partitions_revoked.connect
async def forget_revoked(sender: Any, revoked: set, **kwargs: Any) -> None:
    for tp in revoked:
        applied_offsets.pop(tp, None)


async def remaining_lag() -> int | None:
    """Events still to read in the worst of this worker's clap partitions, None if unknown."""
    worst = 0
    for tp in app.consumer.assignment():
        if tp.topic != config.clap_topic:
            continue
        end = app.consumer.highwater(tp)
        if end is None or end < 0:
            return None  # not fetched from yet
        done = applied_offsets.get(tp)
        if done is None:
            position = await app.consumer.position(tp)
            if position is None:
                return None
            done = position - 1
        worst = max(worst, end - 1 - done)
    return worst


async def wait_for_topic_metadata() -> None:
    """Make the producer know every topic it will route by key before the first event.

    ``use_partitioner`` routes table writes through the producer's partitioner, which needs the
    changelog topic's partitions; right after Faust creates those topics the producer may not
    know them yet, and the first table write would fail.
    """
    producer = app.producer._ensure_producer()  # faust-streaming exposes no public accessor
    for topic in (users_table.changelog_topic_name, tallies_table.changelog_topic_name, config.counts_topic):
        await producer.partitions_for(topic)


def tune_worker() -> None:
    """Settings Faust does not expose, applied once the worker has set up logging.

    - The Kafka clients' debug records were 8% of the worker's CPU while filtered out by the
      handler (measured with py-spy); a logger level stops them being made at all.
    - Faust's producer buffer warns and stalls at 100 pending messages; a batch's write-back
      sends one changelog message per changed key, often thousands.
    """
    for name in ("aiokafka", "faust", "mode"):
        logging.getLogger(name).setLevel(logging.INFO)
    app.producer.buffer.max_messages = 2 * config.max_batch


@app.agent(claps_topic)
async def count_claps(stream: faust.StreamT) -> None:
    tune_worker()
    await wait_for_topic_metadata()
    try:
        await _count(stream)
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except BaseException:
        # Faust acks a batch's events even when the agent body fails, and would commit their
        # offsets with part of the batch unapplied. Exiting at once, before the next commit,
        # turns any unexpected failure into a restart that re-reads the batch (idempotently).
        log.critical("unexpected failure while counting claps; exiting before offsets commit", exc_info=True)
        logging.shutdown()
        os._exit(70)


async def _count(stream: faust.StreamT) -> None:
    async for events in stream.take_events(config.max_batch, within=config.batch_wait_s):
        now = now_ms()
        for event in events:
            try:
                clap = ClapRecorded.from_json(event.value)
            except (ValueError, KeyError, TypeError):
                log.warning("skipping malformed clap at %s[%d]@%d", event.message.topic, event.message.partition, event.message.offset)
                continue
            core.apply(clap, event.message.offset, now)
            applied_offsets[event.message.tp] = event.message.offset
        action = catch_up.after_batch(await remaining_lag(), batch_was_full=len(events) >= config.max_batch)
        if action == CatchUp.ANNOUNCE_ALL:
            log.info("caught up with the clap log: announcing every total at epoch %d", config.epoch)
            updates = core.announce_all(now_ms())
        elif action == CatchUp.FLUSH:
            updates = core.flush(now_ms(), force=True)
        else:
            updates = []
        # State first, then totals, all before Faust acks this batch (see the module docstring).
        users.write_back()
        tallies.write_back()
        for update in updates:
            await counts_topic.send(key=update.article.encode(), value=update.to_json())
