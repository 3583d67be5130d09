"""The processor's settings, read from the environment in this one place."""
from __future__ import annotations

import os
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
    # How long a batch waits for events. Faust starts that wait only after the previous batch was
    # applied, so the period is this plus the processing time; 90% of the window keeps the
    # period near the window (measured: ~10-15 ms of processing per batch under load).
    batch_wait_ms: int | None = None
    max_batch: int = 10_000
    epoch: int = 1
    app_prefix: str = "clap-processor"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    log_format: str = "text"  # LOG_FORMAT: json (deploy/k8s) or text (observability/logs.py)

    @property
    def batch_wait_s(self) -> float:
        wait_ms = self.batch_wait_ms if self.batch_wait_ms is not None else self.window_ms * 0.9
        return max(wait_ms, 1) / 1000

    @property
    def min_insync_replicas(self) -> int:
        """Every topic of the service: an acked write survives the loss of any one broker."""
        return min(2, self.replication_factor)

    @property
    def app_id(self) -> str:
        # A new epoch is a rebuild from the log: fresh tables, a fresh group reading from offset 0.
        return f"{self.app_prefix}-e{self.epoch}"

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
            epoch=int(env.get("CLAP_EPOCH", cls.epoch)),
            app_prefix=env.get("PROCESSOR_APP_PREFIX", cls.app_prefix),
            web_host=env.get("PROCESSOR_WEB_HOST", cls.web_host),
            web_port=int(env.get("PROCESSOR_WEB_PORT", cls.web_port)),
            log_format=env.get("LOG_FORMAT", cls.log_format),
        )
