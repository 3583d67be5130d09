"""The Faust app: claps in, numbered per-article totals out to the fan-out topic.

Delivery is at-least-once, made safe by ``core.ledger``: every state record remembers the
highest offset it absorbed, so events re-read after a crash count once. Faust's exactly_once
mode is not used (it has open duplicate bugs upstream) and is not needed.

Claps are taken in batches (``processor.intake``: Faust's consumer, commits and rebalances, without
its per-event streams) and each batch goes through one pure step (``core.processing.ClapCounter``);
the batch's state writes and totals are acknowledged by Kafka before its messages are acked, so
committed offsets never run ahead of durable state. A total's
position is derived from the log (see ``core.messages.CountChanged``), so a replay after any
crash announces the same totals at the same positions.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

import faust
import orjson
from faust.types import TP

from core.counting import SAY_EVERY_MS, counting_states
from core.ledger import ArticleTally, UserClaps
from core.messages import ClapRecorded, CountChanged, CountingStatus
from core.partitioning import PartitionCache, article_partitioner
from core.processing import ClapCounter, LogEvent, pause_before_next_batch
from observability.heap import HeapSteward
from observability.logs import faust_logging_config
from processor import metrics
from processor.bulk_send import TableWriter, send_by_partition
from processor.config import ProcessorConfig
from processor.delivery import DirectDeliveryApp, RawBytesSchema
from processor.fault_injection import DeliveryDropper
from processor.holes import HoleRereader
from processor.membership import tune_worker_consumers
from processor.readiness import add_ready_page, observe
from processor.recent import RecentRecords
from processor.state_store import faust_store_url, worker_state_dir

log = logging.getLogger("processor")

T = TypeVar("T")


def kafka_producer() -> Any:
    """The worker's aiokafka producer under Faust's (faust-streaming exposes no public accessor)."""
    return app.producer._ensure_producer()


class BatchedTable(MutableMapping[str, T], Generic[T]):
    """A Faust table (raw byte keys, JSON values) seen as a mapping of str keys to core records.

    Writes are held until :meth:`write_back`, which the counting loop calls once per batch, before the
    batch's totals are sent and its events acked: a key changed by many events of a batch costs
    one changelog message, not one per event, and the batch's messages go out as one record
    batch per changelog partition (``processor.bulk_send``).
    """

    def __init__(self, table: faust.Table, decode: Callable[[dict[str, Any]], T], encode: Callable[[T], dict[str, Any]],
                 partition_of: Callable[[bytes], int], recent_records: int) -> None:
        self.table, self.decode, self.encode = table, decode, encode
        self.writer = TableWriter(table, kafka_producer, partition_of)
        self.held: dict[str, T] = {}
        # What this worker wrote last, decoded (processor.recent); forgotten at every rebalance.
        self.recent: RecentRecords[T] = RecentRecords(recent_records)
        self.batch_era = 0

    def begin_batch(self) -> None:
        """A batch's reads start: its writes are kept decoded only if no rebalance comes before
        they are written back."""
        self.batch_era = self.recent.era

    def __getitem__(self, key: str) -> T:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        # Not Mapping.get's KeyError round trip: most lookups of a backlog find no record yet.
        held = self.held.get(key)
        if held is None:
            held = self.recent.get(key)
        if held is not None:
            return held
        get_encoded = getattr(self.table.data, "get_encoded", None)
        if get_encoded is not None:  # our RocksDB store: one lookup, no Faust sensors
            encoded = get_encoded(key.encode())
            doc = None if encoded is None else orjson.loads(encoded)
        else:
            doc = self.table.get(key.encode())
        return default if doc is None else self.decode(doc)

    def __setitem__(self, key: str, value: T) -> None:
        self.held[key] = value

    def __delitem__(self, key: str) -> None:
        raise TypeError("the clap tables never delete: every write goes through write_back")

    def __iter__(self) -> Iterator[str]:
        keys = {key.decode() for key in self.table}
        return iter(keys | self.held.keys())

    def __len__(self) -> int:
        return sum(1 for _ in self)

    async def write_back(self) -> list[asyncio.Future]:
        """Send the held writes; returns the futures of their record batches."""
        if not self.held:
            return []
        changes = {}
        for key, value in self.held.items():
            doc = self.encode(value)
            changes[key.encode()] = (orjson.dumps(doc), doc)
        self.recent.remember(self.held, self.batch_era)
        self.held.clear()
        return await self.writer.write(changes)


config = ProcessorConfig.from_env()
# Before Faust creates its consumer: heartbeats through the assignment, a short fetch wait, and a
# static member's leave on a clean stop (processor/membership.py). The leave waits no longer than
# the session timeout: after it the member is gone anyway.
tune_worker_consumers(config.group_instance_id, leave_timeout_s=config.session_timeout_s)

# Faust's app, but for how its consumer hands fetched claps to the counting loop (processor/delivery.py).
app = DirectDeliveryApp(
    config.app_id,
    broker=f"kafka://{config.kafka_bootstrap}",
    # Tables on disk, one directory per worker: a restart replays only the changelog written
    # since (processor/state_store.py). Standbys keep a copy of other workers' partitions.
    store=faust_store_url(config.store),
    datadir=worker_state_dir(config.state_path),
    table_standby_replicas=config.standby_replicas,
    # A dead worker's partitions move after the session timeout; a restarted one with the same
    # instance id takes its own back at once (static membership); one stopped on purpose leaves
    # the group as it stops (tune_worker_consumers above).
    broker_session_timeout=config.session_timeout_s,
    broker_heartbeat_interval=config.heartbeat_interval_s,
    consumer_group_instance_id=config.group_instance_id,
    topic_partitions=config.partitions,
    topic_replication_factor=config.replication_factor,
    producer_partitioner=article_partitioner,
    producer_acks=-1,
    # A batch's writes go out as record batches (processor.bulk_send); Kafka takes one per
    # partition per request, so the default 16 KiB made a large batch wait several round trips.
    producer_max_batch_size=256 * 1024,
    processing_guarantee="at_least_once",
    # Faust's web server answers liveness probes (deploy/k8s); one port per worker on a host.
    web_enabled=True,
    web_bind=config.web_host,
    web_port=config.web_port,
    consumer_auto_offset_reset="earliest",
    stream_wait_empty=True,
    stream_buffer_maxsize=config.stream_buffer,
    logging_config=faust_logging_config("processor", config.log_format),
)

claps_topic = app.topic(config.clap_topic, schema=RawBytesSchema(), partitions=config.partitions)
claps = app.intake(claps_topic, maxsize=config.stream_buffer)
counts_topic = app.topic(config.counts_topic, key_serializer="raw", value_serializer="raw", partitions=config.partitions)

# use_partitioner: table keys are routed by ``article_partitioner``, which sends "article:user"
# to the article's own partition, so every table stays co-partitioned with the clap topic.
# key_type=bytes keeps keys raw on the changelog (a JSON-quoted key would hash differently).
# Changelogs are as durable as the clap log they summarise (same replication, same min ISR).
CHANGELOG_CONFIGS = {"min.insync.replicas": str(config.min_insync_replicas)}
users_table = app.Table(
    "user-claps", partitions=config.partitions, key_type=bytes, use_partitioner=True, extra_topic_configs=CHANGELOG_CONFIGS
)
tallies_table = app.Table(
    "article-tallies", partitions=config.partitions, key_type=bytes, use_partitioner=True, extra_topic_configs=CHANGELOG_CONFIGS
)

partition_of = PartitionCache(config.partitions)
users = BatchedTable(users_table, UserClaps.from_dict, UserClaps.to_dict, partition_of, config.recent_records)
tallies = BatchedTable(tallies_table, ArticleTally.from_dict, ArticleTally.to_dict, partition_of, config.recent_records)
# Kafka offsets of the clap topic have no holes (no transactions, no compaction): a skipped
# delivery is noticed and read again (see ``HoleRereader``).
counter = ClapCounter(users, tallies, epoch=config.epoch, offsets_without_holes=True)
metrics.install(app, config.clap_topic)
# GET /ready: 200 once the tables are restored and no partition holds its totals back.
add_ready_page(app, catching_up=lambda: counter.catching_up)


@app.on_partitions_revoked.connect
async def release_revoked(sender: Any, revoked: set, **kwargs: Any) -> None:
    users.recent.forget()
    tallies.recent.forget()
    for tp in revoked:
        if tp.topic == config.clap_topic:
            counter.revoke(tp.partition)


@app.on_partitions_assigned.connect
async def hold_until_caught_up(sender: Any, assigned: set, **kwargs: Any) -> None:
    """Hold each newly owned clap partition's totals until the log is read to its end now."""
    # As at the revoke: a rebalance's two ends both forget, so neither alone is relied on.
    users.recent.forget()
    tallies.recent.forget()
    mine = [tp for tp in assigned if tp.topic == config.clap_topic and not counter.is_live(tp.partition)]
    if not mine:
        return
    ends = await app.consumer.highwaters(*mine)
    starts = await committed_offsets(mine)
    behind = {}
    for tp in mine:
        counter.assign(tp.partition, ends[tp], starts[tp])
        if starts[tp] < ends[tp]:
            behind[tp.partition] = (starts[tp], ends[tp])
    if behind:
        log.info("catching up on partitions (next offset, end offset): %s", behind)


async def committed_offsets(partitions: list[TP]) -> dict[TP, int]:
    """Where each partition's delivery starts for certain: its committed offset, or the log's
    start where none was committed (the consumer's reset is "earliest").

    Not the consumer's position: Faust resumes the flow before its seek to the committed
    offsets, and records fetched meanwhile may be dropped from the intake, so the position can
    be past claps nobody counted. Taken as the counter's expected offset, it let the worker count
    the claps after them, and the ledger, which keeps each record's highest offset, then took
    the skipped ones for replays when they were read again (found by `make chaos`, worker-kill:
    11 claps of one article never counted).
    """
    thread = app.consumer._thread  # Faust's consumer thread; the committed offsets are aiokafka's
    kafka_consumer = thread._ensure_consumer()

    async def read_committed() -> dict[TP, int | None]:
        return {tp: await kafka_consumer.committed(tp) for tp in partitions}

    committed = await thread.call_thread(read_committed)
    never = [tp for tp, offset in committed.items() if offset is None]
    starts = await app.consumer.earliest_offsets(*never) if never else {}
    return {tp: offset if offset is not None else starts.get(tp, 0) for tp, offset in committed.items()}


async def wait_for_topic_metadata() -> None:
    """Make the producer know every topic it will route by key before the first event.

    ``use_partitioner`` routes table writes through the producer's partitioner, which needs the
    changelog topic's partitions; right after Faust creates those topics the producer may not
    know them yet, and the first table write would fail.
    """
    producer = kafka_producer()
    for topic in (users_table.changelog_topic_name, tallies_table.changelog_topic_name, config.counts_topic):
        await producer.partitions_for(topic)


def tune_worker() -> None:
    """Settings Faust does not expose, applied once the worker has set up logging.

    - The Kafka clients' debug records were 8% of the worker's CPU while filtered out by the
      handler (measured with py-spy); a logger level stops them being made at all.
    - Faust's producer buffer warns and stalls at 100 pending messages; a batch's write-back
      sends one changelog message per changed key, often thousands.
    - Faust's own monitor is called several times per event and message; nothing reads it
      (our /metrics are processor.metrics), so it is taken off the sensor list.
    """
    for name in ("aiokafka", "faust", "mode"):
        logging.getLogger(name).setLevel(logging.INFO)
    app.producer.buffer.max_messages = 2 * config.max_batch
    if app.monitor in set(app.sensors):  # an agent Faust restarts calls this again
        app.sensors.remove(app.monitor)


@app.task
async def count_claps() -> None:
    tune_worker()
    await wait_for_topic_metadata()
    try:
        await _count()
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except BaseException:
        # Nothing else would restart the counting, and a batch may be half applied. Exiting at
        # once, before its messages are acked, turns any unexpected failure into a restart that
        # re-reads the batch (idempotently).
        log.critical("unexpected failure while counting claps; exiting before offsets commit", exc_info=True)
        logging.shutdown()
        os._exit(70)


async def _count() -> None:
    loop = asyncio.get_running_loop()
    async for messages in claps.batches(config.max_batch, within=config.batch_wait_s):
        taken_at = loop.time()
        try:
            await _count_batch(messages)
        except BaseException:
            claps.release(messages)  # not acked, so not committed: whoever counts next reads them again
            raise
        # One batch, and so one announcement per article, per window (not window + work).
        pause = pause_before_next_batch(config.window_ms / 1000, config.batch_wait_s, taken_at, loop.time(),
                                        backlog=len(messages) >= config.max_batch or bool(counter.catching_up))
        if pause:
            await asyncio.sleep(pause)


async def _count_batch(messages: list[Any]) -> None:
    holes.batch_in_progress = True
    metrics.batches.started()
    batch = [LogEvent(message.partition, message.offset, _parse(message)) for message in messages]
    if dropper:
        batch = dropper.filter(batch)
    users.begin_batch()
    tallies.begin_batch()
    was_catching_up = bool(counter.catching_up)
    updates = counter.step(batch)
    if was_catching_up and not counter.catching_up:
        log.info("caught up with the clap log at epoch %d", config.epoch)
    # Only what the counter applied is acked: a message past a hole (or dropped by the test
    # hook) comes again when the partition is read from the hole, and its offset must not be
    # committed before then.
    applied = [message for message in messages if counter.has_applied(message.partition, message.offset)]
    sent = await users.write_back()
    sent += await tallies.write_back()
    sent += await send_totals(updates)
    await flush_all_sends(sent)
    claps.ack(applied)
    claps.release(messages)  # the rest: a rebalance need not wait for them
    metrics.batches.done(batch, updates, holding=len(counter.catching_up), taken=len(applied),
                         is_taken=counter.has_applied)
    if counter.holes or holes.first_seen:
        await holes.reread()
    holes.batch_in_progress = False


async def send_totals(updates: list[CountChanged]) -> list[asyncio.Future]:
    """The batch's totals to the fan-out topic, one record batch per partition."""
    messages = [(update.article.encode(), update.to_json()) for update in updates]
    return await send_by_partition(kafka_producer(), config.counts_topic, messages, partition_of)


async def flush_all_sends(sent: list[asyncio.Future]) -> None:
    """Return once every changelog write and total of this batch is acknowledged by Kafka.

    The batch's messages are acked right after this returns, and Faust may commit their offsets
    from then on. Its own flush before a commit gives up after 100 ms with writes still
    buffered, which would commit offsets past state that was never written. Waiting here, once
    per batch, makes "state durable" come before "offsets committable". A record batch that
    failed raises here, and the worker stops before any commit.
    """
    buffer = app.producer.buffer
    while buffer.size:
        await buffer.flush()
    await asyncio.gather(*sent)
    await app.producer.flush()


holes = HoleRereader(counter, config.clap_topic, lambda: app.consumer, rebalancing=lambda: app.rebalancing,
                     clock=lambda: asyncio.get_running_loop().time())
dropper = DeliveryDropper(config.test_drop_once)


@app.task
async def keep_the_heap() -> None:
    """Keep CPython's full collections off the worker's long-lived heap (observability/heap.py).

    Not vital: if it stops, CPython's own collector runs on, with its longer pauses. With
    CLAP_GC_FREEZE_EVERY_S=0 it only measures CPython's pauses.
    """
    pauses = {generation: metrics.gc_pause.labels(generation=str(generation)) for generation in (0, 1, 2)}
    steward = HeapSteward(
        freeze_every_s=config.gc_freeze_every_s,
        sweep_every_s=config.gc_sweep_every_s,
        on_pause=lambda generation, seconds: pauses[generation].observe(seconds),
        on_sweep=lambda seconds, freed: metrics.gc_sweeps.inc(),
    )
    try:
        await steward.run()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.error("heap steward stopped; CPython's own collector runs from now on", exc_info=True)


@app.timer(interval=HoleRereader.look_every_s)
async def look_for_a_hole_at_the_tail() -> None:
    await holes.look_at_the_tail()


_restoring_since: float | None = None


@app.timer(interval=SAY_EVERY_MS / 1000)
async def say_whether_counting_is_live() -> None:
    """Tell the gateways, for each clap partition this worker owns, whether its totals are live
    or held back (core.counting), on the fan-out partition of the same number: both topics are
    keyed by article with as many partitions, so that is where its articles' totals are.

    Held back: the counter holds the partition (catching up with the log, or a hole). Restoring
    tables counts too once it has lasted 2 s: every rebalance restores for a moment, and readers
    need not hear of that. A partition between owners for a rebalance is simply not spoken for;
    gateways hear silence as catching up only after 5 s of it.
    """
    global _restoring_since
    try:
        worker = observe(app)
        now = asyncio.get_running_loop().time()
        restoring = worker.recovering or not worker.tables_ready
        if not restoring:
            _restoring_since = None
        elif _restoring_since is None:
            _restoring_since = now
        counting = _restoring_since is None or now - _restoring_since < 2.0
        held = {*counter.catching_up, *counter.holes}
        for partition, state in counting_states(counter.expected_offsets, held, counting=counting).items():
            status = CountingStatus(partition, state, config.epoch)
            await counts_topic.send(key=status.key, value=status.to_json(), partition=partition)
    except Exception as error:  # never a reason to stop counting; gateways take silence for catching up
        log.warning("counting status not sent: %r", error)


def _parse(message: Any) -> ClapRecorded | None:
    try:
        return ClapRecorded.from_json(message.value)
    except (ValueError, KeyError, TypeError):
        log.warning("skipping malformed clap at %s[%d]@%d", message.topic, message.partition, message.offset,
                    extra={"partition": message.partition, "offset": message.offset})
        return None
