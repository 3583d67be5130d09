"""Events and messages that cross process boundaries, and their one wire codec.

The JSON layout of each message is described by a versioned JSON Schema in ``schemas/``;
``tests/unit/test_schemas.py`` checks that what this module writes validates against it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from core.validation import MAX_CLAPS_PER_MESSAGE, is_valid_id

SCHEMA_VERSION = 1
CLAP = "clap"
UNDO = "undo"


@dataclass(frozen=True, slots=True)
class ClapRecorded:
    """A reader clapped ``count`` times for ``article``; what the gateway writes to the clap log.

    ``clap_id`` is chosen by the client and is unique per clap batch: it is the idempotency key.
    ``user`` is the server-verified identity of the sender, never taken from the client's message.

    ``kind`` is ``"undo"`` for an undo: the user takes back every clap they had counted on the
    article (``clap_id`` is then the undo's own idempotency key and ``count`` is 0). Undos travel
    in the same log, under the same key, so they are ordered with the user's claps.
    """

    article: str
    user: str
    count: int
    clap_id: str
    at_ms: int
    kind: str = "clap"

    @property
    def is_undo(self) -> bool:
        return self.kind == UNDO

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"v": SCHEMA_VERSION, "type": self.kind, "article": self.article, "user": self.user}
        if not self.is_undo:
            doc["count"] = self.count
        doc["id"] = self.clap_id
        doc["at"] = self.at_ms
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ClapRecorded:
        doc = orjson.loads(raw)
        kind = doc.get("type", CLAP)
        if kind not in (CLAP, UNDO):
            raise ValueError(f"unknown clap log record type {kind!r}")
        event = cls(
            article=doc["article"],
            user=doc["user"],
            count=0 if kind == UNDO else doc["count"],
            clap_id=doc["id"],
            at_ms=int(doc["at"]),
            kind=kind,
        )
        # The log is open to any producer with access: a record the schema refuses counts nothing
        # (adapters skip it as malformed), so the processor and an analytics consumer that checks
        # clap-recorded.v1.json agree on what counted.
        event.check()
        return event

    def check(self) -> None:
        """Raise ValueError unless this event is one ``from_json`` reads back from ``to_json``,
        equal to itself: what a reader of the log counts. A log that hands its readers the events
        it wrote, without reading them back, refuses the others at append."""
        if self.kind not in (CLAP, UNDO):
            raise ValueError(f"unknown clap log record type {self.kind!r}")
        count = self.count
        if self.kind == CLAP and (type(count) is not int or not 1 <= count <= MAX_CLAPS_PER_MESSAGE):
            raise ValueError(f"clap count {count!r} is not an integer 1..{MAX_CLAPS_PER_MESSAGE}")
        if self.kind == UNDO and (type(count) is not int or count != 0):
            raise ValueError(f"an undo counts 0, not {count!r}")  # to_json does not write it
        for field, value in (("article", self.article), ("user", self.user), ("id", self.clap_id)):
            if not is_valid_id(value):
                raise ValueError(f"{field} {value!r} is not a valid id")
        if type(self.at_ms) is not int:
            raise ValueError(f"at {self.at_ms!r} is not an integer")


def undo_recorded(article: str, user: str, undo_id: str, at_ms: int) -> ClapRecorded:
    """The clap log event of an undo."""
    return ClapRecorded(article, user, 0, undo_id, at_ms, UNDO)


@dataclass(frozen=True, slots=True)
class CountChanged:
    """The absolute clap total of an article at a position; what the fan-out topic carries.

    ``(epoch, seq)`` orders totals of one article. ``seq`` is one past the log offset of the
    newest clap event of the article that the total includes (offsets of the article's
    partition), so it is a function of the log: any replay of the same events announces the
    same total at the same position, and a clap acked at offset ``o`` is in every total whose
    ``seq`` is above ``o``. Seqs have gaps (other articles share the partition). ``epoch`` grows
    when counts are rebuilt from the log. Totals are absolute, so a missed message loses
    nothing: the next one carries everything. ``delta`` is what this announcement added, and
    ``at_ms`` is when the newest clap in it reached the gateway (for latency measurement).
    """

    article: str
    total: int
    delta: int
    seq: int
    epoch: int
    at_ms: int

    def position(self) -> tuple[int, int]:
        return (self.epoch, self.seq)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "type": "count",
            "article": self.article,
            "total": self.total,
            "delta": self.delta,
            "seq": self.seq,
            "epoch": self.epoch,
            "at": self.at_ms,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str) -> CountChanged:
        return cls.from_doc(orjson.loads(raw))

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> CountChanged:
        return cls(
            article=doc["article"],
            total=int(doc["total"]),
            delta=int(doc.get("delta", 0)),
            seq=int(doc["seq"]),
            epoch=int(doc.get("epoch", 0)),
            at_ms=int(doc.get("at", 0)),
        )


def is_newer(candidate: tuple[int, int], seen: tuple[int, int] | None) -> bool:
    """Whether a total at position ``candidate`` should replace one at ``seen``.

    Readers, rooms and stores all keep the highest position they have seen and never move back.
    """
    return seen is None or candidate > seen


def newest_per_article(updates: list[CountChanged]) -> list[CountChanged]:
    """Coalesce a batch: only the highest position of each article matters."""
    newest: dict[str, CountChanged] = {}
    for update in updates:
        held = newest.get(update.article)
        if held is None or is_newer(update.position(), held.position()):
            newest[update.article] = update
    return list(newest.values())


COUNTING = "counting"
LIVE = "live"
CATCHING_UP = "catching_up"
COUNTING_STATES = (LIVE, CATCHING_UP)


@dataclass(frozen=True, slots=True)
class CountingStatus:
    """Whether the totals of one clap partition's articles are being counted as claps arrive.

    Each processor worker says it about every clap partition it owns, once a second, on the
    fan-out partition of the same number (where those articles' totals are: both topics are
    keyed by article and have as many partitions). ``catching_up``: the worker holds the
    partition's totals back while it reads its log again (a restart, a rebalance, a rebuild, a
    skipped delivery), so acked claps are not in any total yet. Silence says as much: a dead
    worker, or nobody owning the partition. ``epoch`` tells a rebuild's workers from the live ones.
    """

    partition: int
    state: str
    epoch: int

    def __post_init__(self) -> None:
        if self.state not in COUNTING_STATES:
            raise ValueError(f"counting state must be one of {COUNTING_STATES}, not {self.state!r}")
        if self.partition < 0:
            raise ValueError(f"partition must not be negative, not {self.partition}")

    @property
    def key(self) -> bytes:
        """Its key on the compacted fan-out topic: one per partition, never an article id (which
        cannot hold a colon), so it replaces only the partition's previous status."""
        return f"{COUNTING}:{self.partition}".encode()

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"v": SCHEMA_VERSION, "type": COUNTING, "partition": self.partition, "state": self.state, "epoch": self.epoch}
        )

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> CountingStatus:
        partition, epoch = doc["partition"], doc["epoch"]
        if type(partition) is not int or type(epoch) is not int:
            raise ValueError("partition and epoch must be integers")
        return cls(partition, doc["state"], epoch)


def decode_fan_out(raw: bytes | str) -> CountChanged | CountingStatus:
    """One record of the fan-out topic: an article's total, or a partition's counting status.

    Raises ValueError (or KeyError, TypeError) for a record that is neither; a consumer skips it.
    """
    doc = orjson.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("a fan-out record is a JSON object")
    kind = doc.get("type", "count")
    if kind == COUNTING:
        return CountingStatus.from_doc(doc)
    if kind != "count":
        raise ValueError(f"unknown fan-out record type {kind!r}")
    return CountChanged.from_doc(doc)
