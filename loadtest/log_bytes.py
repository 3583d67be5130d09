"""Bytes on a broker's disk per clap event: what the clap log kept forever grows by.

    python -m loadtest.log_bytes [--events 20000] [--data-dir .run/kafka/data]

Needs the local Kafka (`bash deploy/local/services.sh up kafka`) and its data directory
(``$CLAP_RUN_DIR/kafka/data``, default ``.run/kafka/data`` of the checkout that started it). For
each way of producing it writes ``--events`` clap events shaped like the gateway's (a 17-character
user, a 32-character clap id, a 24-character article, counts 1 to 5) to a fresh one-partition
topic, then reads the size of the partition's segment files: one copy, before replication.

- ``batched``: the gateway's producer settings (acks=all, idempotent, linger 2 ms) with many
  claps in flight, as under load: records share Kafka batches.
- ``one per batch``: each send awaited before the next, as a quiet gateway sends: every record
  pays a whole batch header.
- ``batched, gzip``: as ``batched`` with producer compression (gzip: the codec this virtualenv
  has without extra packages; zstd or lz4 are the production choice, with similar ratios on JSON).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import logging

from core.messages import ClapRecorded

BOOTSTRAP = "127.0.0.1:9092"
REPO = Path(__file__).resolve().parents[1]


def clap(i: int) -> ClapRecorded:
    return ClapRecorded(f"article-{i % 500:016d}", f"u{i % 7919:016x}", 1 + i % 5, uuid.uuid4().hex, 1_764_000_000_000 + i)


async def produce(topic: str, events: int, *, one_per_batch: bool, compression: str | None) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True, linger_ms=2, compression_type=compression
    )
    await producer.start()
    try:
        if one_per_batch:
            for i in range(events):
                await (await producer.send(topic, clap(i).to_json(), key=clap(i).article.encode(), partition=0))
        else:
            for start in range(0, events, 1000):
                sends = [await producer.send(topic, clap(i).to_json(), key=clap(i).article.encode(), partition=0)
                         for i in range(start, min(events, start + 1000))]
                await asyncio.gather(*sends)
    finally:
        await producer.stop()


def segment_bytes(data_dir: Path, topic: str) -> int:
    return sum(f.stat().st_size for f in (data_dir / f"{topic}-0").glob("*.log"))


async def measure(name: str, events: int, data_dir: Path, **how) -> tuple[str, int, int]:
    topic = f"logbytes-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await produce(topic, events, **how)
        await asyncio.sleep(1)
        size = segment_bytes(data_dir, topic)
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    return name, events, size


async def main(events: int, data_dir: Path) -> None:
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # "topic not found" while a new topic propagates
    if not data_dir.is_dir():
        raise SystemExit(f"no Kafka data directory at {data_dir}; pass --data-dir")
    json_bytes = sum(len(clap(i).to_json()) for i in range(1000)) / 1000
    print(f"clap event JSON: {json_bytes:.0f} bytes on average (ClapRecorded.to_json)")
    print("| produced | events | segment bytes | bytes per event (one copy) |")
    print("|---|---|---|---|")
    runs = [
        ("batched (gateway settings, claps in flight)", dict(one_per_batch=False, compression=None)),
        ("one per batch (a quiet gateway)", dict(one_per_batch=True, compression=None)),
        ("batched, gzip", dict(one_per_batch=False, compression="gzip")),
    ]
    for name, how in runs:
        n = events if not how["one_per_batch"] else min(events, 5000)  # awaited one by one: keep it short
        label, count, size = await measure(name, n, data_dir, **how)
        print(f"| {label} | {count:,} | {size:,} | **{size / count:.1f}** |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    run_dir = Path(os.environ.get("CLAP_RUN_DIR", REPO / ".run"))
    parser.add_argument("--data-dir", type=Path, default=run_dir / "kafka" / "data")
    options = parser.parse_args()
    asyncio.run(main(options.events, options.data_dir))
