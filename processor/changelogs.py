"""Create the processor's table changelogs for an epoch before any worker of it starts.

    python -m processor.changelogs      (reads the processor's environment, CLAP_EPOCH included)

Faust names a table's changelog ``<app id>-<table>-changelog`` and creates it itself, but a
worker asks for the topic's metadata before creating it. On brokers that auto-create topics,
that request makes the topic with the broker's default partition count, which need not be the
clap topic's: a table key then lives in a changelog partition that another worker restores.
On brokers that do not (``deploy/local/ha.sh``), a worker's first table write can find the
producer without the new topic's metadata and crash (seen on this machine, docs/RELIABILITY.md).
Creating both changelogs up front, co-partitioned with the clap topic, avoids both.
"""
from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from processor.config import ProcessorConfig

log = logging.getLogger("processor.changelogs")

TABLES = ("user-claps", "article-tallies")  # processor/app.py's table names


def changelog_names(config: ProcessorConfig) -> list[str]:
    return [f"{config.app_id}-{table}-changelog" for table in TABLES]


async def ensure_changelogs(config: ProcessorConfig) -> list[str]:
    """Create the epoch's missing changelog topics; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, config.partitions, config.replication_factor,
                     topic_configs={"cleanup.policy": "compact", "min.insync.replicas": str(config.min_insync_replicas)})
            for name in changelog_names(config) if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in missing]
    finally:
        await admin.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    created = asyncio.run(ensure_changelogs(ProcessorConfig.from_env()))
    log.info("changelog topics created: %s", created or "none (all there)")
