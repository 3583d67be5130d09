"""What one clap's append to Kafka costs the gateway's process: the clap log's append against
aiokafka's ``send`` awaited in a task per clap (the gateway's append before ``KafkaClapLog``
handed records straight to the producer's batches).

    python -m loadtest.append_cost [--bootstrap 127.0.0.1:9092] [--claps 20000] [--rounds 5]

Needs a running Kafka (``make up``). Each round appends ``--claps`` claps over 50 articles both
ways, alternating, through one ``KafkaClapLog`` on a topic of this run's own, yielding to the
loop every 200 appends as a busy gateway would, and waits until every one is acked; prints the
process's CPU time per append (the broker's work is in another process) and the wall time of
each, and the medians.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable

from core.messages import ClapRecorded
from gateway.kafka_adapters import KafkaClapLog

ARTICLES = 50


async def _send_in_a_task(log: KafkaClapLog, clap: ClapRecorded) -> int:
    """The previous append: aiokafka's public ``send``, then its delivery, awaited in a task."""
    delivery = await log._producer.send(log.topic, clap.to_json(), key=clap.article.encode())
    return (await delivery).offset


def _ways(log: KafkaClapLog) -> dict[str, Callable[[ClapRecorded], asyncio.Future[int]]]:
    return {
        "send() in a task per clap": lambda clap: asyncio.ensure_future(_send_in_a_task(log, clap)),
        "KafkaClapLog.append": log.append,
    }


async def _append_all(append: Callable[[ClapRecorded], asyncio.Future[int]], claps: int, tag: str) -> tuple[float, float]:
    acked = 0
    finished = asyncio.Event()

    def count(done: asyncio.Future[int]) -> None:
        nonlocal acked
        done.result()  # a failed append fails the measurement
        acked += 1
        if acked == claps:
            finished.set()

    cpu_began, wall_began = time.process_time(), time.perf_counter()
    for index in range(claps):
        append(ClapRecorded(f"article-{index % ARTICLES}", f"u{index}", 1, f"{tag}-{index}", 0)).add_done_callback(count)
        if index % 200 == 199:
            await asyncio.sleep(0)
    await finished.wait()
    return (time.process_time() - cpu_began) / claps * 1e6, time.perf_counter() - wall_began


async def measure(bootstrap: str, claps: int, rounds: int) -> dict[str, dict[str, object]]:
    from processor.config import ProcessorConfig
    from processor.topics import ensure_topics

    topic = f"append-cost-{uuid.uuid4().hex[:8]}"
    await ensure_topics(ProcessorConfig(
        kafka_bootstrap=bootstrap, clap_topic=topic, counts_topic=f"{topic}-counts", partitions=12,
        app_prefix=topic, articles_topic=f"{topic}-articles", presence_topic=f"{topic}-presence"))
    log = KafkaClapLog(bootstrap, topic)
    await log.start()
    try:
        await log.append(ClapRecorded("article-0", "u", 1, "warm-up", 0))  # the topic's partitions
        ways = _ways(log)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for round_ in range(rounds):
            for name, append in ways.items():
                runs[name].append(await _append_all(append, claps, f"{round_}-{name[:4]}"))
    finally:
        await log.close()
    return {
        name: {
            "cpu_us_per_append": [round(cpu, 1) for cpu, _ in measured],
            "wall_s": [round(wall, 2) for _, wall in measured],
            "median_cpu_us_per_append": round(statistics.median(cpu for cpu, _ in measured), 1),
        }
        for name, measured in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--claps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(measure(args.bootstrap, args.claps, args.rounds))
    for name, result in results.items():
        print(f"{name}: {result}")
    before, after = (result["median_cpu_us_per_append"] for result in results.values())
    print(f"ratio of medians (append / send in a task): {after / before:.2f}")


if __name__ == "__main__":
    main()
