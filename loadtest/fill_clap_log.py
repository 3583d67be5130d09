"""Fill a clap topic with valid clap events, as gateways would write them, to measure a replay.

    python -m loadtest.fill_clap_log --bootstrap 127.0.0.1:9092 --events 300000

Events go straight to Kafka (no gateway): ``--articles`` articles named ``fill-<run>-<n>``,
``--users`` users clapping 1-5 at a time, some of them past the cap, and one event in 50 a
repeated clap id (a client retry). Keyed and partitioned exactly like the gateway's clap log
(``core.partitioning.article_partitioner``), acks=all. Prints what it wrote and the expected
counted total of all its articles (``core.ledger`` rules), so a rebuild can be checked against it.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid

from aiokafka import AIOKafkaProducer

from core.ledger import MAX_CLAPS_PER_USER
from core.messages import ClapRecorded
from core.partitioning import article_partitioner


async def fill(bootstrap: str, topic: str, events: int, articles: int, users: int, seed: int) -> tuple[int, int]:
    """Write ``events`` clap events; returns (events written, expected counted claps)."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20,
                                max_batch_size=256 * 1024, partitioner=article_partitioner)
    await producer.start()
    given: dict[tuple[int, int], int] = {}
    sent_ids: list[tuple[int, int, str, int]] = []
    pending = []
    try:
        for n in range(events):
            if sent_ids and n % 50 == 49:
                article, user, clap_id, count = rng.choice(sent_ids)  # a retry of an earlier batch
            else:
                article, user, count = rng.randrange(articles), rng.randrange(users), rng.randint(1, 5)
                clap_id = f"f{run}-{n}"
                sent_ids.append((article, user, clap_id, count))
                given[(article, user)] = given.get((article, user), 0) + count
            event = ClapRecorded(f"fill-{run}-{article}", f"u{user}", count, clap_id, int(time.time() * 1000))
            pending.append(await producer.send(topic, event.to_json(), key=event.article.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return events, sum(min(total, MAX_CLAPS_PER_USER) for total in given.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fill_clap_log", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="claps")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--articles", type=int, default=2_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    began = time.monotonic()
    written, expected = asyncio.run(fill(args.bootstrap, args.topic, args.events, args.articles, args.users, args.seed))
    print(f"wrote {written:,} clap events to {args.topic!r} in {time.monotonic() - began:.1f} s; "
          f"they count {expected:,} claps in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
