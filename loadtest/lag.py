"""Which stage trails during a run: the processor's and the projector's unread records, per second.

    python -m loadtest.lag [--seconds 60] [--every 1] [--bootstrap 127.0.0.1:9092]

Run beside a load (`loadtest ingest` through `make up`). Each look prints, per consumer group,
how many records of each topic it had not committed yet: the processor's group on the clap topic,
the projector's on the counts topic and on the processor's per-user changelog. A group commits
after each batch it applies, so a lag of about one batch is the group keeping up; a lag that
grows while the claps come is the stage that the durable total waits on.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from processor.config import ProcessorConfig
from projector.config import ProjectorConfig


def lag_per_topic(committed: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]) -> dict[str, int]:
    """Records after each partition's committed offset, summed per topic (never negative)."""
    lag: dict[str, int] = {}
    for tp, offset in committed.items():
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends.get(tp, offset) - offset)
    return lag


async def watch(bootstrap: str, groups: list[str], seconds: float, every: float) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await reader.start()
    try:
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < seconds:
            parts = []
            for group in groups:
                committed = {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()}
                ends = await reader.end_offsets(list(committed)) if committed else {}
                lags = lag_per_topic(committed, ends)
                parts.append(f"{group}: " + ", ".join(f"{topic} {lag:,}" for topic, lag in sorted(lags.items())))
            print(f"{elapsed:6.1f} s  " + " | ".join(parts), flush=True)
            await asyncio.sleep(every)
    finally:
        await reader.stop()
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=1.0)
    args = parser.parse_args()
    processor, projector = ProcessorConfig.from_env(), ProjectorConfig.from_env()
    asyncio.run(watch(args.bootstrap, [processor.app_id, projector.group_id], args.seconds, args.every))


if __name__ == "__main__":
    main()
