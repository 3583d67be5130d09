"""Create the clap, fan-out and table changelog topics with their fixed partition counts,
and the articles topic.

The clap topic's partition count is fixed for its life: an article's claps, its per-user state
and its offsets all live in one partition, so changing the count would move articles between
partitions. Capacity grows by adding processor workers up to the partition count.

The articles topic is the publishing platform's catalogue, which gateways follow
(gateway/catalogue.py). When this creates it, it publishes the demo articles into it, so a fresh
deployment has something to show; after that the topic is the platform's alone.

python -m processor.topics   (reads the processor's environment)
"""
from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from gateway.articles import SEEDED
from gateway.catalogue import publish_articles
from processor.config import ProcessorConfig

log = logging.getLogger("processor.topics")

# The Faust tables of processor/app.py. Their changelog topics are made here, before any worker
# runs: a worker that asks for a topic's metadata first would have the broker auto-create it
# with its default partition count, and a changelog must have the clap topic's count.
TABLE_NAMES = ("user-claps", "article-tallies")


def changelog_topic(config: ProcessorConfig, table: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{config.app_id}-{table}-changelog"


def changelog_topics(config: ProcessorConfig) -> list[NewTopic]:
    return [
        NewTopic(
            changelog_topic(config, table), config.partitions, config.replication_factor,
            topic_configs={"cleanup.policy": "compact", "min.insync.replicas": str(config.min_insync_replicas)},
        )
        for table in TABLE_NAMES
    ]


async def ensure_changelog_topics(config: ProcessorConfig) -> None:
    """This epoch's changelog topics alone: what a worker makes before Faust starts, so that a
    new epoch started straight away (README, "Replaying the log") gets them right too."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    await admin.start()
    try:
        await create_missing(admin, changelog_topics(config))
    finally:
        await admin.close()


class TopicPartitionsMismatch(RuntimeError):
    """An existing topic has another partition count than this deployment's: claps, state and
    positions would be filed under partitions that disagree."""


async def partition_counts(admin: AIOKafkaAdminClient, names: list[str], settle_s: float = 10.0) -> dict[str, int]:
    """Each topic's partition count, as the brokers' metadata has it.

    A topic created a moment ago (by another worker starting at the same time) can be described
    with no partitions until its metadata has spread; those are asked again for up to
    ``settle_s``, and a count still unknown then is left out rather than taken for a mismatch.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_s
    counts: dict[str, int] = {}
    pending = list(names)
    while pending:
        described = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(pending)}
        counts.update({name: n for name, n in described.items() if n})
        pending = [name for name in pending if name not in counts]
        if not pending or loop.time() >= deadline:
            break
        await asyncio.sleep(0.2)
    if pending:
        log.warning("could not read the partition count of %s; not checked", pending)
    return counts


async def create_missing(admin: AIOKafkaAdminClient, wanted: list[NewTopic]) -> list[NewTopic]:
    """Create the topics of ``wanted`` that do not exist yet; returns those it created.

    A topic that exists already must have the partition count wanted: a broker that
    auto-creates topics makes one with its default count when a client touches the name first
    (a gateway started before this ran, say), and nothing would notice until totals disagree.
    """
    existing = set(await admin.list_topics())
    missing = [t for t in wanted if t.name not in existing]
    if missing:
        try:
            await admin.create_topics(missing)
        except TopicAlreadyExistsError:
            pass  # another worker or the bootstrap Job was first: as good
        log.info("created topics %s", [t.name for t in missing])
    present = [t for t in wanted if t.name in existing]
    if present:
        found = await partition_counts(admin, [t.name for t in present])
        wrong = [(t.name, found[t.name], t.num_partitions) for t in present
                 if found.get(t.name) and found[t.name] != t.num_partitions]
        if wrong:
            raise TopicPartitionsMismatch(
                "topics with another partition count than this deployment's "
                + ", ".join(f"{name} ({has} partitions, wanted {want})" for name, has, want in wrong)
                + ". A partition count is fixed for a topic's life. If such a topic was auto-created by the"
                " broker and holds nothing, delete it and run `python -m processor.topics` again; if the clap"
                " topic holds claps, count them onto new topics at a new epoch (README, \"Replaying the log\").")
    return missing


async def ensure_topics(config: ProcessorConfig) -> None:
    min_isr = str(config.min_insync_replicas)
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    await admin.start()
    try:
        wanted = [
            NewTopic(
                config.clap_topic, config.partitions, config.replication_factor,
                # The clap log is the source of truth that SREs replay: keep it.
                topic_configs={"retention.ms": "-1", "min.insync.replicas": min_isr},
            ),
            NewTopic(
                config.counts_topic, config.partitions, config.replication_factor,
                # Totals are absolute: only the newest per article matters in the long run.
                topic_configs={"cleanup.policy": "compact", "min.insync.replicas": min_isr},
            ),
            NewTopic(
                # One partition: a catalogue is small, and one ordered stream lets a publisher
                # know a gateway has everything once it has the last article published.
                config.articles_topic, 1, config.replication_factor,
                topic_configs={"cleanup.policy": "compact", "min.insync.replicas": min_isr},
            ),
        ] + changelog_topics(config)
        wanted.append(
            NewTopic(
                # Gateways' reader counts (gateway.presence): one small report per gateway a
                # second, keyed by gateway; gateways read it from the end and a report is stale
                # after seconds, so a minute is plenty to keep.
                config.presence_topic, 1, config.replication_factor,
                topic_configs={
                    "cleanup.policy": "compact,delete", "retention.ms": "60000", "segment.ms": "60000",
                    "min.insync.replicas": min_isr,
                },
            )
        )
        missing = await create_missing(admin, wanted)
    finally:
        await admin.close()
    if config.articles_topic in {t.name for t in missing}:
        await publish_articles(config.kafka_bootstrap, config.articles_topic, SEEDED)
        log.info("published %d demo articles to %s", len(SEEDED), config.articles_topic)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(ensure_topics(ProcessorConfig.from_env()))
