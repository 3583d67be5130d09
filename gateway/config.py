"""The gateway's settings, read from the environment (and the data directory) in this one place."""
from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from core.validation import normalize_origin

SECRET_FILE = "secret"
ADMIN_TOKEN_FILE = "admin-token"
EMBEDDED_FANOUT_CHUNK = 250


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    mode: str = "embedded"  # embedded | distributed
    secret: bytes = b""  # CLAP_SECRET; embedded mode without one keeps its own in the data directory
    data_dir: str = "data"
    log_format: str = "text"  # LOG_FORMAT: json (deploy/k8s) or text (observability/logs.py)
    kafka_bootstrap: str = "127.0.0.1:9092"
    clap_topic: str = "claps"
    counts_topic: str = "clap-counts"
    articles_topic: str = "articles"
    presence_topic: str = "presence"
    # Readers per article: each gateway reports its own every second (and at least every two),
    # and forgets a gateway not heard from for five (docs/DESIGN.md, "Who is reading now").
    presence_interval_s: float = 1.0
    presence_ttl_ms: int = 5_000
    # A partition whose processor has said nothing for this long counts as catching up: readers
    # of its articles are told so (the processor speaks every second; gateway/counting.py).
    counting_stale_s: float = 5.0
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
    # Joins and leaves: a reconnecting reader rejoins its (at most 16) rooms at once.
    joins_per_second: float = 10.0
    join_burst: int = 40
    inflight_claps_per_connection: int = 8
    # New identities (POST /api/session and the article page's cookie) per client address.
    identities_per_minute: float = 10.0
    identity_burst: int = 20
    identity_limiter_addresses: int = 100_000
    # The header a trusted proxy in front of every gateway puts the client's address in (e.g.
    # X-Real-IP behind ingress-nginx); empty: the TCP peer's address.
    client_ip_header: str = ""
    # Origins besides the gateway's own whose pages may open the websocket.
    allowed_origins: frozenset[str] = frozenset()
    admin_token: str = ""  # CLAP_ADMIN_TOKEN; embedded mode without one keeps its own
    write_buffer_high: int = 64 * 1024
    # The kernel's send buffer per socket. Left to autotuning it grows to 4 MiB for a reader that
    # stops reading, before the gateway's own conflation even notices; bounded, a stalled reader
    # costs at most this plus one frame per room, and 100,000 sockets cannot pin gigabytes.
    socket_send_buffer: int = 64 * 1024
    keepalive_s: float = 20.0
    name: str = "gateway-1"
    # Where the article page's script may connect, in the order it tries them after a close
    # (http(s) base URLs); empty: the page's own origin.
    gateway_urls: tuple[str, ...] = ()
    # A clap that the log has not made durable within this gets `unavailable` (retry, same id).
    append_timeout_s: float = 5.0
    # A store read that has not answered within this counts as a failure (see /readyz).
    store_timeout_s: float = 5.0
    # The heap out of CPython's full collections (observability/heap.py): frozen this often (0:
    # CPython's own collector alone, its pauses still in /metrics); swept once as many connections
    # closed as are open (at least this many), and at least this often.
    gc_freeze_every_s: float = 1.0
    gc_sweep_after_closed: int = 1000
    gc_sweep_every_s: float = 900.0
    # A large room's pass writes this many readers, then lets the loop run (acks, the window's
    # tick, other rooms). Embedded, the window's tick, its SQLite commit and the log's fsyncs wait
    # on this loop, and 250 (about 4 ms of writes) cut the hot room's p99 by a third; distributed,
    # only acks and the feed do, and 1,000 serves a quarter more frames per core (BENCHMARKS §2.3).
    fanout_chunk: int = 1000  # CLAP_FANOUT_CHUNK; EMBEDDED_FANOUT_CHUNK when CLAP_MODE=embedded
    # Loop turns a pass gives away between its chunks. What I/O wakes moves one await per turn: a
    # Kafka answer goes from the connection's reader task to the request's task to the sender and
    # the clap's ack, five turns before the next batch leaves. With one turn between chunks each
    # step waited a whole chunk of writes (a `make up` append took 70-170 ms, p50; 27-37 with 12).
    # Twelve cost the fan-out per core nothing measurable; 32 cost the readers updates (BENCHMARKS §4.10).
    fanout_yields: int = 12  # CLAP_FANOUT_YIELDS
    # The fewest updates a second a reader of a large room should get: a gateway whose room is near
    # it (passes over 80 % of its interval) takes no new connections (/readyz, gateway/rooms.py).
    cadence_floor: float = 4.0
    # How long the loop's thread keeps the GIL while another thread (the clap log's disk thread,
    # SQLite's commits, the Cassandra driver) waits for it to hand back a result; CPython's
    # default is 5 ms, a wait every ack and every window's commit would pay behind a busy loop.
    gil_switch_interval_s: float = 0.001
    # The largest record batch the gateway's Kafka producer sends for one partition per round trip
    # (gateway/kafka_adapters.py): a hot article's claps all go to one partition.
    clap_log_batch_bytes: int = 256 * 1024

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> GatewayConfig:
        env = dict(os.environ if env is None else env)
        return cls(
            host=env.get("HOST", cls.host),
            port=int(env.get("PORT", cls.port)),
            mode=env.get("CLAP_MODE", cls.mode),
            secret=env.get("CLAP_SECRET", "").encode(),
            data_dir=env.get("CLAP_DATA_DIR", cls.data_dir),
            log_format=env.get("LOG_FORMAT", cls.log_format),
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            clap_topic=env.get("CLAP_TOPIC", cls.clap_topic),
            counts_topic=env.get("COUNTS_TOPIC", cls.counts_topic),
            articles_topic=env.get("ARTICLES_TOPIC", cls.articles_topic),
            presence_topic=env.get("PRESENCE_TOPIC", cls.presence_topic),
            cassandra_hosts=tuple(env.get("CASSANDRA_HOSTS", "127.0.0.1").split(",")),
            cassandra_port=int(env.get("CASSANDRA_PORT", cls.cassandra_port)),
            cassandra_keyspace=env.get("CASSANDRA_KEYSPACE", cls.cassandra_keyspace),
            cassandra_replication_factor=int(env.get("CASSANDRA_RF", cls.cassandra_replication_factor)),
            window_ms=int(env.get("CLAP_WINDOW_MS", cls.window_ms)),
            epoch=int(env.get("CLAP_EPOCH", cls.epoch)),
            max_connections=int(env.get("MAX_CONNECTIONS", cls.max_connections)),
            claps_per_second=float(env.get("CLAPS_PER_SECOND", cls.claps_per_second)),
            clap_burst=int(env.get("CLAP_BURST", cls.clap_burst)),
            joins_per_second=float(env.get("JOINS_PER_SECOND", cls.joins_per_second)),
            join_burst=int(env.get("JOIN_BURST", cls.join_burst)),
            identities_per_minute=float(env.get("NEW_IDENTITIES_PER_MINUTE", cls.identities_per_minute)),
            identity_burst=int(env.get("NEW_IDENTITY_BURST", cls.identity_burst)),
            identity_limiter_addresses=int(env.get("NEW_IDENTITY_ADDRESSES", cls.identity_limiter_addresses)),
            client_ip_header=env.get("CLAP_CLIENT_IP_HEADER", cls.client_ip_header).strip(),
            allowed_origins=frozenset(
                normalize_origin(o) for o in env.get("CLAP_ALLOWED_ORIGINS", "").split(",") if o.strip()
            ),
            admin_token=env.get("CLAP_ADMIN_TOKEN", cls.admin_token),
            name=env.get("GATEWAY_NAME", cls.name),
            socket_send_buffer=int(env.get("SOCKET_SEND_BUFFER", cls.socket_send_buffer)),
            write_buffer_high=int(env.get("WRITE_BUFFER_HIGH", cls.write_buffer_high)),
            gateway_urls=tuple(url.strip() for url in env.get("CLAP_GATEWAY_URLS", "").split(",") if url.strip()),
            append_timeout_s=float(env.get("CLAP_APPEND_TIMEOUT_S", cls.append_timeout_s)),
            store_timeout_s=float(env.get("CLAP_STORE_TIMEOUT_S", cls.store_timeout_s)),
            counting_stale_s=float(env.get("COUNTING_STALE_S", cls.counting_stale_s)),
            gc_freeze_every_s=float(env.get("CLAP_GC_FREEZE_EVERY_S", cls.gc_freeze_every_s)),
            gc_sweep_after_closed=int(env.get("CLAP_GC_SWEEP_AFTER_CLOSED", cls.gc_sweep_after_closed)),
            gc_sweep_every_s=float(env.get("CLAP_GC_SWEEP_EVERY_S", cls.gc_sweep_every_s)),
            fanout_chunk=int(env.get("CLAP_FANOUT_CHUNK", EMBEDDED_FANOUT_CHUNK
                                     if env.get("CLAP_MODE", cls.mode) == "embedded" else cls.fanout_chunk)),
            fanout_yields=max(1, int(env.get("CLAP_FANOUT_YIELDS", cls.fanout_yields))),
            cadence_floor=float(env.get("CLAP_CADENCE_FLOOR", cls.cadence_floor)),
            gil_switch_interval_s=float(env.get("CLAP_GIL_SWITCH_INTERVAL_S", cls.gil_switch_interval_s)),
            clap_log_batch_bytes=int(env.get("CLAP_LOG_BATCH_BYTES", cls.clap_log_batch_bytes)),
        )

    def with_stored_credentials(self) -> GatewayConfig:
        """Fill in what the environment left out from files in the data directory (embedded).

        A lone embedded gateway keeps its secret and admin token across restarts, so a restart
        neither signs every reader out nor hands each a fresh allowance. A distributed gateway
        must be given CLAP_SECRET: every gateway of a deployment has to share it.
        """
        if self.mode != "embedded":
            if not self.secret:
                raise SystemExit("CLAP_SECRET must be set in distributed mode: every gateway must share one")
            return self
        data = Path(self.data_dir)
        secret = self.secret or read_or_create_secret(data / SECRET_FILE).encode()
        admin_token = self.admin_token or read_or_create_secret(data / ADMIN_TOKEN_FILE)
        return dataclasses.replace(self, secret=secret, admin_token=admin_token)


def read_or_create_secret(path: Path) -> str:
    """The secret stored at ``path``; a new random one, readable by this user only, if none is.

    Written to a private temporary file, then linked into place: a crash never leaves an empty
    or partial secret, and of two starts racing, both end up with the one that won.
    """
    try:
        stored = path.read_text().strip()
        if stored:
            return stored
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            if not path.read_text().strip():  # an empty file left by some other tool: replace it
                os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text().strip()
