"""Which stage trails during a run: the claps the processor has not counted yet, and the
processor's and the projector's uncommitted records, per second.

    python -m loadtest.lag [--seconds 60] [--every 1] [--bootstrap 127.0.0.1:9092]

Run beside a load (`loadtest ingest` through `make up`). Each look prints:
- ``counted``: clap records past the newest one the processor has counted, summed over the clap
  topic's partitions. Read from the totals it announces: each batch announces every article it
  touched at the position of its newest event, so the highest ``seq`` announced for the articles
  of a partition is one past the newest offset of that partition counted. A partition counts from
  its first announcement seen (the tool reads the counts topic from its end when it starts).
- per consumer group, the records of each topic it had not committed yet: the processor's group
  on the clap topic, the projector's totals group on the counts topic and its reader rows' group
  on the processor's per-user changelog. The projector commits after each batch it has written,
  so its lag is the stage's.
  The processor's is not: Faust commits every 10,000 acknowledged claps or 2.8 s
  (``broker_commit_every``, ``broker_commit_interval``), whatever the counting, so its committed
  lag swings between 0 and that many claps while ``counted`` may be a batch.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from core.messages import CountChanged
from core.partitioning import PartitionCache
from loadtest.live_totals import announced_totals
from processor.config import ProcessorConfig
from projector.config import ProjectorConfig


def lag_per_topic(committed: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]) -> dict[str, int]:
    """Records after each partition's committed offset, summed per topic (never negative)."""
    lag: dict[str, int] = {}
    for tp, offset in committed.items():
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends.get(tp, offset) - offset)
    return lag


class CountedPositions:
    """Per clap partition, one past the newest offset counted, from the announced totals."""

    def __init__(self, partitions: int) -> None:
        self.partition_of = PartitionCache(partitions)
        self.counted: dict[int, tuple[int, int]] = {}  # partition -> (epoch, seq)

    def see(self, total: CountChanged) -> None:
        partition = self.partition_of(total.article.encode())
        position = (total.epoch, total.seq)
        if position > self.counted.get(partition, (-1, -1)):
            self.counted[partition] = position

    def lag(self, ends: Mapping[int, int]) -> int:
        """Clap records past the counted position, over the partitions seen announced."""
        return sum(max(0, ends[partition] - seq) for partition, (_, seq) in self.counted.items() if partition in ends)


async def follow_totals(consumer: AIOKafkaConsumer, positions: CountedPositions) -> None:
    async for total in announced_totals(consumer):
        positions.see(total)


async def watch(bootstrap: str, groups: list[str], seconds: float, every: float,
                clap_topic: str, counts_topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    totals = AIOKafkaConsumer(counts_topic, bootstrap_servers=bootstrap, auto_offset_reset="latest")
    positions = CountedPositions(partitions)
    clap_partitions = [TopicPartition(clap_topic, p) for p in range(partitions)]
    await admin.start()
    await reader.start()
    await totals.start()
    following = asyncio.ensure_future(follow_totals(totals, positions))
    try:
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < seconds:
            clap_ends = {tp.partition: end for tp, end in (await reader.end_offsets(clap_partitions)).items()}
            parts = [f"counted: claps {positions.lag(clap_ends):,}"]
            for group in groups:
                committed = {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()}
                ends = await reader.end_offsets(list(committed)) if committed else {}
                lags = lag_per_topic(committed, ends)
                parts.append(f"{group}: " + ", ".join(f"{topic} {lag:,}" for topic, lag in sorted(lags.items())))
            print(f"{elapsed:6.1f} s  " + " | ".join(parts), flush=True)
            await asyncio.sleep(every)
    finally:
        following.cancel()
        await totals.stop()
        await reader.stop()
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=1.0)
    args = parser.parse_args()
    processor, projector = ProcessorConfig.from_env(), ProjectorConfig.from_env()
    asyncio.run(watch(args.bootstrap, [processor.app_id, projector.group_for("total"), projector.group_for("user")],
                      args.seconds, args.every,
                      processor.clap_topic, processor.counts_topic, processor.partitions))


if __name__ == "__main__":
    main()
