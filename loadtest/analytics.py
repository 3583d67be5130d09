"""An example analytics consumer: tail the clap topic in a consumer group of its own, validate
every event against its published schema, and count claps with the service's own rules.

    python -m loadtest.analytics --bootstrap 127.0.0.1:9092 --from earliest --until-end
    python -m loadtest.analytics --group my-dashboard --from committed --duration 60
    python -m loadtest.analytics --from 1500 --until-end --json counts.json

What it shows other teams:
- Its own consumer group (``--group``): it never disturbs the service's groups, and with
  ``--from committed`` it resumes where it stopped.
- Validation against ``schemas/clap-recorded.v1.json`` in the tolerant mode that the schema
  evolution rules ask of consumers (docs/PROTOCOL.md): unknown fields are ignored, an unknown
  version ``v`` or an invalid event is reported with its partition and offset and skipped,
  and nothing else is affected.
- Counted claps by ``core.processing.apply_event`` (claps and undos): a repeated clap id counts once and a user
  counts at most 50 per article, exactly as the processor counts. Counting is exact from
  offset 0 (``--from earliest``); from a later offset the consumer does not know the claps
  before it, so a user's cap and repeated ids are judged from that offset on.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import time
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from jsonschema import Draft202012Validator

import schemas
from core.ledger import ArticleTally, UserClaps
from core.messages import ClapRecorded
from core.processing import apply_event

KNOWN_VERSIONS = {1}


def tolerant_validator(name: str) -> Draft202012Validator:
    """The published schema with ``additionalProperties: false`` lifted: fields added within a
    version must not break a consumer (docs/PROTOCOL.md, schema evolution)."""
    doc = copy.deepcopy(schemas.load(name))
    doc.pop("additionalProperties", None)
    return Draft202012Validator(doc)


CLAP_SCHEMA = tolerant_validator("clap-recorded.v1")
UNDO_SCHEMA = tolerant_validator("clap-undo.v1")


@dataclass
class Rejected:
    partition: int
    offset: int
    reason: str


@dataclass
class ClapCounts:
    """Counted claps per article, with the processor's rules."""

    users: dict[tuple[str, str], UserClaps] = field(default_factory=dict)
    tallies: dict[str, ArticleTally] = field(default_factory=dict)
    events: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    def add(self, partition: int, offset: int, raw: bytes | None) -> None:
        """One record of the clap topic, as read."""
        self.events += 1
        try:
            doc = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            self.rejected.append(Rejected(partition, offset, "not JSON"))
            return
        if isinstance(doc, dict) and doc.get("v") not in KNOWN_VERSIONS:
            self.rejected.append(Rejected(partition, offset, f"unknown version v={doc.get('v')!r}"))
            return
        schema = UNDO_SCHEMA if isinstance(doc, dict) and doc.get("type") == "undo" else CLAP_SCHEMA
        error = next(iter(schema.iter_errors(doc)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(event)"
            self.rejected.append(Rejected(partition, offset, f"{where}: {error.message}"))
            return
        key = (doc["article"], doc["user"])
        event = ClapRecorded(doc["article"], doc["user"], doc.get("count", 0), doc["id"], doc["at"], doc.get("type", "clap"))
        applied = apply_event(self.users.get(key, UserClaps()), self.tallies.get(doc["article"], ArticleTally()), event, offset)
        self.users[key] = applied.user
        self.tallies[doc["article"]] = applied.article

    @property
    def totals(self) -> dict[str, int]:
        return {article: tally.total for article, tally in self.tallies.items()}


async def consume(
    bootstrap: str, topic: str, group: str, *, start: str = "earliest", until_end: bool = True,
    duration_s: float | None = None, max_s: float = 3600,
) -> ClapCounts:
    """Read ``topic`` in consumer group ``group`` from ``start`` (earliest, latest, committed, or
    an offset applied to every partition) until the end offsets of the moment it started
    (``until_end``) or for ``duration_s``; commits its offsets after each batch."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = (await admin.describe_topics([topic]))[0]
    finally:
        await admin.close()
    if described["error_code"] or not described["partitions"]:
        raise SystemExit(f"topic {topic!r} not found at {bootstrap}")
    partitions = [TopicPartition(topic, p["partition"]) for p in sorted(described["partitions"], key=lambda p: p["partition"])]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="latest" if start == "latest" else "earliest",
    )
    await consumer.start()
    counts = ClapCounts()
    try:
        # Manual assignment keeps every partition here (one consumer sees every article), while
        # offsets are still committed to this consumer's own group.
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        if start == "earliest":
            await consumer.seek_to_beginning(*partitions)
        elif start == "latest":
            await consumer.seek_to_end(*partitions)
        elif start == "committed":
            for tp in partitions:
                if await consumer.committed(tp) is None:
                    consumer.seek(tp, 0)
        else:
            for tp in partitions:
                consumer.seek(tp, min(int(start), ends[tp]))
        began = time.monotonic()
        stop_at = began + (duration_s if duration_s is not None else max_s)
        while time.monotonic() < stop_at:
            if until_end and all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                break
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                for record in records:
                    if until_end and record.offset >= ends[tp]:
                        continue
                    counts.add(tp.partition, record.offset, record.value)
            if batches:
                await consumer.commit()
        else:
            if until_end and duration_s is None:
                raise TimeoutError(f"did not reach the end of {topic} in {max_s} s")
    finally:
        await consumer.stop()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.analytics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="claps")
    parser.add_argument("--group", default="clap-analytics-example")
    parser.add_argument("--from", dest="start", default="earliest", help="earliest | latest | committed | OFFSET")
    end = parser.add_mutually_exclusive_group()
    end.add_argument("--until-end", action="store_true", help="stop at the end offsets of the start (default)")
    end.add_argument("--duration", type=float, default=None, help="tail for this many seconds instead")
    parser.add_argument("--json", default=None, help="write totals and rejected events to this file")
    args = parser.parse_args(argv)
    counts = asyncio.run(consume(args.bootstrap, args.topic, args.group, start=args.start,
                                 until_end=args.duration is None, duration_s=args.duration))
    totals = counts.totals
    print(f"{counts.events:,} events, {len(counts.rejected)} rejected, {len(totals):,} articles, "
          f"{sum(totals.values()):,} counted claps")
    for article, total in sorted(totals.items(), key=lambda item: -item[1])[:20]:
        print(f"  {total:8,}  {article}")
    for rejected in counts.rejected[:20]:
        print(f"  rejected {args.topic}[{rejected.partition}]@{rejected.offset}: {rejected.reason}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"events": counts.events, "totals": totals,
                       "rejected": [vars(r) for r in counts.rejected]}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
