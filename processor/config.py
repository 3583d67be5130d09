"""The processor's settings, read from the environment in this one place."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessorConfig:
    kafka_bootstrap: str = "127.0.0.1:9092"
    clap_topic: str = "claps"
    counts_topic: str = "clap-counts"
    articles_topic: str = "articles"  # created (and seeded) by processor.topics; read by gateways
    presence_topic: str = "presence"  # created by processor.topics; gateways report readers there
    partitions: int = 12
    replication_factor: int = 1
    window_ms: int = 100
    # How long a batch waits for events. The wait starts only when the counting loop asks, after
    # the previous batch was applied (processor.intake, as Faust's take_events), so the loop
    # pauses for the rest of the window after its work (core.processing.pause_before_next_batch).
    batch_wait_ms: int | None = None
    max_batch: int = 10_000
    # Claps fetched ahead of the counting loop (processor.intake): two batches; a full intake
    # holds the consumer's fetch loop until a batch is taken. With Faust's streams, its default
    # of 4,096 was less than one batch, and a backlog's every further event was handed over
    # through a task and a wait of its own (1.19x the events/s with 20,000, BENCHMARKS §4.5).
    stream_buffer: int = 20_000
    # State records kept decoded after a batch writes them, per table, until the next rebalance
    # (processor.recent); 0 reads every record from the store again. A reader's record holds at
    # most 50 clap ids (the cap), so this bounds the memory at a few tens of MB per table.
    recent_records: int = 10_000
    epoch: int = 1
    app_prefix: str = "clap-processor"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    log_format: str = "text"  # LOG_FORMAT: json (deploy/k8s) or text (observability/logs.py)
    # Where the worker keeps its tables between runs: "rocksdb" (on disk under state_dir, so a
    # restart replays only the changelog written since) or "memory" (replays it all).
    store: str = "rocksdb"
    # One directory per worker: two live workers must never share one (see state_path).
    state_dir: str = "data/processor"
    # Each worker keeps a copy of this many other workers' partitions, ready to take them over.
    standby_replicas: int = 1
    # How long the group waits for a silent worker before moving its partitions: most of the
    # time a survivor takes to count a killed worker's partitions (docs/BENCHMARKS.md §6).
    # Kafka refuses a session timeout below its group.min.session.timeout.ms, 6 s by default and
    # 2 s in every broker config of deploy/ (tests/unit/test_docs_agree.py). Heartbeats come from
    # Faust's consumer thread, not the event loop the batches run on, so a long batch does not
    # silence them; they go on through a rebalance's assignment too (processor/membership.py).
    # That thread still stalled for up to 2 s on this loaded 2-core machine: at a heartbeat every
    # 0.5 s, a stall of 2.5 s still leaves one heartbeat inside the session.
    session_timeout_s: float = 3.0
    heartbeat_interval_s: float = 0.5
    # Kafka static membership: a worker restarted after a crash with the same id takes its
    # partitions back at once, without a rebalance. A worker stopped on purpose leaves the group
    # (processor/membership.py). "" turns it off; None derives it.
    instance_id: str | None = None
    # A test hook (processor/fault_injection.py): "article:first:count,..." drops those events of
    # an article from the worker's delivery once, as Faust's recovery can; empty in production.
    test_drop_once: str = ""
    # The long-lived heap out of CPython's full collections (observability/heap.py): frozen this
    # often (0: CPython's own collector alone) and swept this often. Counting a backlog, CPython
    # ran a full collection every second, a tenth of the worker's time (docs/BENCHMARKS.md §4.2).
    gc_freeze_every_s: float = 1.0
    gc_sweep_every_s: float = 900.0

    def __post_init__(self) -> None:
        if self.store not in ("rocksdb", "memory"):
            raise ValueError(f"PROCESSOR_STORE must be 'rocksdb' or 'memory', not {self.store!r}")
        if self.stream_buffer < 1:
            raise ValueError(f"PROCESSOR_STREAM_BUFFER must be at least 1 (events), not {self.stream_buffer}")
        if self.recent_records < 0:
            raise ValueError(f"PROCESSOR_RECENT_RECORDS must be 0 (keep none) or more, not {self.recent_records}")

    @property
    def batch_wait_s(self) -> float:
        # Half a window: the counting loop pauses for the rest once a batch is done, so batches
        # come once per window whenever the work takes less than half of one (core.processing.
        # pause_before_next_batch); the work adds to the period otherwise.
        wait_ms = self.batch_wait_ms if self.batch_wait_ms is not None else self.window_ms * 0.5
        return max(wait_ms, 1) / 1000

    @property
    def min_insync_replicas(self) -> int:
        """Every topic of the service: an acked write survives the loss of any one broker."""
        return min(2, self.replication_factor)

    @property
    def app_id(self) -> str:
        # A new epoch is a rebuild from the log: fresh tables, a fresh group reading from offset 0.
        return f"{self.app_prefix}-e{self.epoch}"

    @property
    def group_instance_id(self) -> str | None:
        """The worker's stable identity in the consumer group, or None for dynamic membership.

        By default the host name and web port: a host runs one worker per web port, and a pod
        of a StatefulSet keeps its host name across restarts.
        """
        if self.instance_id is None:
            return f"{socket.gethostname()}-{self.web_port}"
        return self.instance_id or None

    @property
    def state_path(self) -> str:
        """This worker's state directory: one per app id (an epoch is a fresh state) and per web
        port, so workers of one app on one host (tests, a laptop) never open each other's files,
        and a worker restarted on the same port finds its own."""
        return os.path.join(self.state_dir, f"{self.app_id}-{self.web_port}")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ProcessorConfig:
        env = dict(os.environ if env is None else env)
        return cls(
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            clap_topic=env.get("CLAP_TOPIC", cls.clap_topic),
            counts_topic=env.get("COUNTS_TOPIC", cls.counts_topic),
            articles_topic=env.get("ARTICLES_TOPIC", cls.articles_topic),
            presence_topic=env.get("PRESENCE_TOPIC", cls.presence_topic),
            partitions=int(env.get("CLAP_PARTITIONS", cls.partitions)),
            replication_factor=int(env.get("KAFKA_RF", cls.replication_factor)),
            window_ms=int(env.get("CLAP_WINDOW_MS", cls.window_ms)),
            batch_wait_ms=int(env["PROCESSOR_BATCH_WAIT_MS"]) if "PROCESSOR_BATCH_WAIT_MS" in env else None,
            max_batch=int(env.get("PROCESSOR_MAX_BATCH", cls.max_batch)),
            stream_buffer=int(env.get("PROCESSOR_STREAM_BUFFER", cls.stream_buffer)),
            recent_records=int(env.get("PROCESSOR_RECENT_RECORDS", cls.recent_records)),
            epoch=int(env.get("CLAP_EPOCH", cls.epoch)),
            app_prefix=env.get("PROCESSOR_APP_PREFIX", cls.app_prefix),
            web_host=env.get("PROCESSOR_WEB_HOST", cls.web_host),
            web_port=int(env.get("PROCESSOR_WEB_PORT", cls.web_port)),
            log_format=env.get("LOG_FORMAT", cls.log_format),
            store=env.get("PROCESSOR_STORE", cls.store),
            state_dir=env.get("PROCESSOR_STATE_DIR", cls.state_dir),
            standby_replicas=int(env.get("PROCESSOR_STANDBY_REPLICAS", cls.standby_replicas)),
            session_timeout_s=float(env.get("PROCESSOR_SESSION_TIMEOUT_S", cls.session_timeout_s)),
            heartbeat_interval_s=float(env.get("PROCESSOR_HEARTBEAT_INTERVAL_S", cls.heartbeat_interval_s)),
            instance_id=env.get("PROCESSOR_INSTANCE_ID", cls.instance_id),
            test_drop_once=env.get("PROCESSOR_TEST_DROP_ONCE", cls.test_drop_once),
            gc_freeze_every_s=float(env.get("CLAP_GC_FREEZE_EVERY_S", cls.gc_freeze_every_s)),
            gc_sweep_every_s=float(env.get("CLAP_GC_SWEEP_EVERY_S", cls.gc_sweep_every_s)),
        )
