"""Deploy-time schema and readiness checks for deploy/k8s. Not part of the service itself.

    python deploy/k8s/bootstrap.py keyspace   create the Cassandra keyspace and table at CASSANDRA_RF,
                                              then check everything `wait` checks (exit 1 if not right)
    python deploy/k8s/bootstrap.py wait       block until topics and keyspace are what the service needs

Why it exists: the gateway's CassandraCounterStore runs CREATE KEYSPACE IF NOT EXISTS with
replication_factor 1 (only the projector passes CASSANDRA_RF), so on a fresh cluster whichever
pod connected first would fix the keyspace's replication for good. The bootstrap Job creates the
keyspace at CASSANDRA_RF before anything else, and every pod's initContainer runs `wait`, so the
services' own CREATE ... IF NOT EXISTS statements are always no-ops in a cluster.

`wait` only reads: it never creates a topic (a metadata request for a missing topic can auto-create
it with broker defaults, so it lists topics first) and never alters a keyspace. It reads the same
environment as the services (the clap-config ConfigMap).
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient
from cassandra.cluster import Cluster

from processor.config import ProcessorConfig
from projector.cassandra_store import CassandraCounterStore
from projector.config import ProjectorConfig

log = logging.getLogger("bootstrap")
TABLE = "article_totals"  # projector/cassandra_store.py


async def topic_problems(config: ProcessorConfig) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    await admin.start()
    try:
        wanted = [config.clap_topic, config.counts_topic]
        existing = set(await admin.list_topics())
        problems = [f"topic {t} does not exist yet" for t in wanted if t not in existing]
        present = [t for t in wanted if t in existing]
        for topic in await admin.describe_topics(present) if present else []:
            count = len(topic["partitions"])
            if count != config.partitions:
                # Article -> partition placement depends on the count; it cannot be fixed by waiting.
                problems.append(
                    f"topic {topic['topic']} has {count} partitions, CLAP_PARTITIONS is {config.partitions}"
                )
            replicas = min((len(p["replicas"]) for p in topic["partitions"]), default=0)
            if replicas < config.replication_factor:
                problems.append(
                    f"topic {topic['topic']} has {replicas} replicas, KAFKA_RF is {config.replication_factor}"
                )
        return problems
    finally:
        await admin.close()


def replication_of(replication: dict[str, str]) -> int:
    """The replica count a keyspace guarantees in every datacenter (SimpleStrategy or NTS)."""
    if replication["class"].endswith("SimpleStrategy"):
        return int(replication["replication_factor"])
    factors = [int(v) for k, v in replication.items() if k != "class"]
    return min(factors, default=0)


def keyspace_problems(config: ProjectorConfig) -> list[str]:
    cluster = Cluster(list(config.cassandra_hosts), port=config.cassandra_port, protocol_version=5)
    try:
        session = cluster.connect()
        row = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (config.cassandra_keyspace,)
        ).one()
        if row is None:
            return [f"keyspace {config.cassandra_keyspace} does not exist yet"]
        problems = []
        rf = replication_of(dict(row.replication))
        if rf < config.replication_factor:
            # Someone created it before the bootstrap Job (a gateway creates it at RF 1). Waiting
            # will not help: raise it with ALTER KEYSPACE, then run `nodetool repair` (README.md).
            problems.append(
                f"keyspace {config.cassandra_keyspace} has replication {rf}, CASSANDRA_RF is {config.replication_factor}"
            )
        table = session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
            (config.cassandra_keyspace, TABLE),
        ).one()
        if table is None:
            problems.append(f"table {config.cassandra_keyspace}.{TABLE} does not exist yet")
        return problems
    finally:
        cluster.shutdown()


async def create_keyspace(config: ProjectorConfig) -> None:
    # The store's own DDL, so the schema here can never drift from the one the code expects.
    store = CassandraCounterStore(
        config.cassandra_hosts, config.cassandra_port, config.cassandra_keyspace,
        replication_factor=config.replication_factor,
    )
    await store.start()
    await store.close()


def problems() -> list[str]:
    found: list[str] = []
    for check in (lambda: asyncio.run(topic_problems(ProcessorConfig.from_env())),
                  lambda: keyspace_problems(ProjectorConfig.from_env())):
        try:
            found += check()
        except Exception as error:  # not reachable yet: the platform may still be starting
            found.append(f"{type(error).__name__}: {error}")
    return found


def wait(poll_seconds: float = 5.0) -> None:
    started = time.monotonic()
    while found := problems():
        log.info("waiting (%.0fs): %s", time.monotonic() - started, "; ".join(found))
        time.sleep(poll_seconds)
    log.info("topics and keyspace are ready")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("cassandra").setLevel(logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    command = argv[1] if len(argv) == 2 else ""
    if command == "keyspace":
        config = ProjectorConfig.from_env()
        asyncio.run(create_keyspace(config))
        # Check the topics too (processor.topics leaves an existing topic as it is), so a wrong
        # partition count or replication fails the Job rather than only stalling the pods.
        found = problems()
        for problem in found:
            log.error("%s", problem)
        if not found:
            log.info("keyspace %s ready at replication %d; topics ready", config.cassandra_keyspace, config.replication_factor)
        return 1 if found else 0
    if command == "wait":
        wait()
        return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
