"""The gateway's settings, read from the environment in this one place."""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    mode: str = "embedded"  # embedded | distributed
    secret: bytes = b""
    data_dir: str = "data"
    kafka_bootstrap: str = "127.0.0.1:9092"
    clap_topic: str = "claps"
    counts_topic: str = "clap-counts"
    cassandra_hosts: tuple[str, ...] = ("127.0.0.1",)
    cassandra_port: int = 9042
    cassandra_keyspace: str = "claps"
    cassandra_replication_factor: int = 1
    window_ms: int = 100
    epoch: int = 1
    max_connections: int = 18000
    max_rooms_per_connection: int = 16
    claps_per_second: float = 20.0
    clap_burst: int = 40
    inflight_claps_per_connection: int = 8
    write_buffer_high: int = 64 * 1024
    # The kernel's send buffer per socket. Left to autotuning it grows to 4 MiB for a reader that
    # stops reading, before the gateway's own conflation even notices; bounded, a stalled reader
    # costs at most this plus one frame per room, and 100,000 sockets cannot pin gigabytes.
    socket_send_buffer: int = 64 * 1024
    keepalive_s: float = 20.0
    name: str = "gateway-1"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> GatewayConfig:
        env = dict(os.environ if env is None else env)
        secret = env.get("CLAP_SECRET")
        if not secret:
            # A per-process secret keeps a lone embedded gateway safe; a deployment of several
            # gateways must share one through CLAP_SECRET (deploy/k8s reads it from a Secret).
            secret = secrets.token_urlsafe(32)
        return cls(
            host=env.get("HOST", cls.host),
            port=int(env.get("PORT", cls.port)),
            mode=env.get("CLAP_MODE", cls.mode),
            secret=secret.encode(),
            data_dir=env.get("CLAP_DATA_DIR", cls.data_dir),
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            clap_topic=env.get("CLAP_TOPIC", cls.clap_topic),
            counts_topic=env.get("COUNTS_TOPIC", cls.counts_topic),
            cassandra_hosts=tuple(env.get("CASSANDRA_HOSTS", "127.0.0.1").split(",")),
            cassandra_port=int(env.get("CASSANDRA_PORT", cls.cassandra_port)),
            cassandra_keyspace=env.get("CASSANDRA_KEYSPACE", cls.cassandra_keyspace),
            cassandra_replication_factor=int(env.get("CASSANDRA_RF", cls.cassandra_replication_factor)),
            window_ms=int(env.get("CLAP_WINDOW_MS", cls.window_ms)),
            epoch=int(env.get("CLAP_EPOCH", cls.epoch)),
            max_connections=int(env.get("MAX_CONNECTIONS", cls.max_connections)),
            claps_per_second=float(env.get("CLAPS_PER_SECOND", cls.claps_per_second)),
            clap_burst=int(env.get("CLAP_BURST", cls.clap_burst)),
            name=env.get("GATEWAY_NAME", cls.name),
            socket_send_buffer=int(env.get("SOCKET_SEND_BUFFER", cls.socket_send_buffer)),
            write_buffer_high=int(env.get("WRITE_BUFFER_HIGH", cls.write_buffer_high)),
        )
