"""The projector's settings, read from the environment in this one place."""
from __future__ import annotations

import os
from dataclasses import dataclass


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
        )
