"""The projector's settings, read from the environment in this one place."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from projector.cassandra_store import USER_ROWS_PER_BATCH


@dataclass(frozen=True)
class ProjectorConfig:
    kafka_bootstrap: str = "127.0.0.1:9092"
    counts_topic: str = "clap-counts"
    group_id: str = "clap-projector"
    cassandra_hosts: tuple[str, ...] = ("127.0.0.1",)
    cassandra_port: int = 9042
    cassandra_keyspace: str = "claps"
    replication_factor: int = 1
    max_batch: int = 5000
    # One article's reader rows per Cassandra batch (projector/cassandra_store.py); 1 writes a
    # request per row.
    user_rows_per_batch: int = USER_ROWS_PER_BATCH
    # The processor's app prefix: its per-user changelogs (one per epoch) carry each reader's
    # counted claps, which the projector stores for the join answer's "mine".
    processor_app_prefix: str = "clap-processor"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9102
    log_format: str = "text"  # LOG_FORMAT: json (deploy/k8s) or text (observability/logs.py)

    @property
    def user_changelog_pattern(self) -> str:
        """Every epoch's per-user changelog; group 1 of a match is the epoch."""
        return rf"^{re.escape(self.processor_app_prefix)}-e(\d+)-user-claps-changelog$"

    def pattern_for(self, kind: str) -> str:
        """The topics of one kind of row: ``total`` (the fan-out topic) or ``user`` (the changelogs)."""
        return rf"^{re.escape(self.counts_topic)}$" if kind == "total" else self.user_changelog_pattern

    def group_for(self, kind: str) -> str:
        """Each kind's own consumer group: the totals keep ``group_id``, the reader rows add ``-readers``."""
        return self.group_id if kind == "total" else f"{self.group_id}-readers"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ProjectorConfig:
        env = dict(os.environ if env is None else env)
        return cls(
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            counts_topic=env.get("COUNTS_TOPIC", cls.counts_topic),
            group_id=env.get("PROJECTOR_GROUP", cls.group_id),
            cassandra_hosts=tuple(env.get("CASSANDRA_HOSTS", "127.0.0.1").split(",")),
            cassandra_port=int(env.get("CASSANDRA_PORT", cls.cassandra_port)),
            cassandra_keyspace=env.get("CASSANDRA_KEYSPACE", cls.cassandra_keyspace),
            replication_factor=int(env.get("CASSANDRA_RF", cls.replication_factor)),
            processor_app_prefix=env.get("PROCESSOR_APP_PREFIX", cls.processor_app_prefix),
            metrics_host=env.get("PROJECTOR_METRICS_HOST", cls.metrics_host),
            metrics_port=int(env.get("PROJECTOR_METRICS_PORT", cls.metrics_port)),
            log_format=env.get("LOG_FORMAT", cls.log_format),
            user_rows_per_batch=int(env.get("PROJECTOR_USER_ROWS_PER_BATCH", cls.user_rows_per_batch)),
        )
