"""The catalogue: the articles a gateway accepts joins and claps for.

The publishing platform owns the catalogue; the clap service only follows it, so that a client
cannot create rooms, store rows and per-user records by inventing article ids.

- distributed: the platform publishes to the compacted ``articles`` topic (key = article id,
  value = ``{"id": ID, "title": T}`` with an optional ``"body"``; a tombstone removes it). Every
  gateway reads the whole topic from the beginning before it serves, then keeps following it.
- embedded: the demo articles are seeded, and new ones arrive through the admin endpoint
  (``PUT /api/admin/articles/{id}?title=T``). They are journalled to a file in the data
  directory, so a restart keeps them.

Command line (distributed; reads the gateway's environment: KAFKA_BOOTSTRAP, ARTICLES_TOPIC)::

    python -m gateway.catalogue seed             publish the demo articles
    python -m gateway.catalogue put ID TITLE     publish one article
    python -m gateway.catalogue delete ID        publish a tombstone
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.validation import is_valid_id
from gateway.articles import SEEDED, Article

log = logging.getLogger(__name__)

MAX_TITLE_CHARS = 300
MAX_BODY_CHARS = 20_000


def article_from_doc(doc: object) -> Article:
    """An article from its JSON document, or ValueError saying what is wrong with it."""
    if not isinstance(doc, dict):
        raise ValueError("an article is a JSON object")
    article_id, title, body = doc.get("id"), doc.get("title"), doc.get("body", "")
    if not is_valid_id(article_id):
        raise ValueError("id must match [A-Za-z0-9_-]{1,64}")
    if not isinstance(title, str) or not 1 <= len(title) <= MAX_TITLE_CHARS:
        raise ValueError(f"title must be a string of 1 to {MAX_TITLE_CHARS} characters")
    if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
        raise ValueError(f"body must be a string of at most {MAX_BODY_CHARS} characters")
    return Article(article_id, title, body)


def article_to_json(article: Article) -> bytes:
    doc = {"id": article.id, "title": article.title}
    if article.body:
        doc["body"] = article.body
    return orjson.dumps(doc)


def parse_article_record(key: bytes | None, value: bytes | None) -> tuple[str, Article | None]:
    """One record of the articles topic: (article id, the article, or None for a tombstone).

    Raises ValueError for a record that names no valid article or whose key and id disagree.
    """
    try:
        article_id = (key or b"").decode()
    except UnicodeDecodeError:
        raise ValueError("the key is not UTF-8") from None
    if not is_valid_id(article_id):
        raise ValueError("the key must be an article id")
    if value is None:
        return article_id, None
    try:
        article = article_from_doc(orjson.loads(value))
    except orjson.JSONDecodeError:
        raise ValueError("the value is not JSON") from None
    if article.id != article_id:
        raise ValueError(f"the key {article_id!r} and the id {article.id!r} differ")
    return article_id, article


class Catalogue:
    """The known articles, in memory: every join, clap and page load asks it."""

    def __init__(self, articles: Iterable[Article] = ()) -> None:
        self._by_id: dict[str, Article] = {article.id: article for article in articles}

    def get(self, article_id: str) -> Article | None:
        return self._by_id.get(article_id)

    def __contains__(self, article_id: object) -> bool:
        return article_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def articles(self) -> list[Article]:
        return list(self._by_id.values())

    def put(self, article: Article) -> None:
        self._by_id[article.id] = article

    def remove(self, article_id: str) -> None:
        self._by_id.pop(article_id, None)

    def apply(self, article_id: str, article: Article | None) -> None:
        """A record of the articles topic or the journal: an article, or its removal."""
        if article is None:
            self.remove(article_id)
        else:
            self.put(article)


class EmbeddedArticles:
    """Embedded mode's catalogue writes: the demo articles, then a journal of admin changes.

    One JSON line per change (an article, or ``{"id": ID, "deleted": true}``), fsynced before
    the change is answered. A torn last line (a crash mid-write) is skipped on replay.
    """

    def __init__(self, catalogue: Catalogue, path: Path) -> None:
        self.catalogue = catalogue
        self.path = path

    def load(self) -> int:
        """Replay the journal into the catalogue; returns how many changes it held."""
        if not self.path.exists():
            return 0
        changes = 0
        raw = self.path.read_bytes()
        for number, line in enumerate(raw.splitlines(), 1):
            try:
                doc = orjson.loads(line)
                if isinstance(doc, dict) and doc.get("deleted") is True and is_valid_id(doc.get("id")):
                    self.catalogue.remove(doc["id"])
                else:
                    self.catalogue.put(article_from_doc(doc))
                changes += 1
            except (orjson.JSONDecodeError, ValueError):
                log.warning("skipping unreadable line %d of %s", number, self.path)
        if raw and not raw.endswith(b"\n"):
            with open(self.path, "ab") as journal:  # end the torn line, so the next one stands alone
                journal.write(b"\n")
        return changes

    async def put(self, article: Article) -> None:
        await asyncio.to_thread(self._append, article_to_json(article))
        self.catalogue.put(article)

    async def remove(self, article_id: str) -> None:
        await asyncio.to_thread(self._append, orjson.dumps({"id": article_id, "deleted": True}))
        self.catalogue.remove(article_id)

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as journal:
            journal.write(line + b"\n")
            journal.flush()
            os.fsync(journal.fileno())


class KafkaCatalogueFeed:
    """Follows the articles topic into a :class:`Catalogue`. No consumer group: every gateway
    reads every partition from the beginning, so each holds the whole catalogue."""

    def __init__(self, bootstrap: str, topic: str, catalogue: Catalogue) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.catalogue = catalogue
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self, timeout_s: float = 120.0) -> int:
        """Read the topic up to the end offsets it has now; returns how many records that was.

        The gateway serves only after this, so it never refuses an article the platform had
        already published when it started.
        """
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"gateway-catalogue-{uuid.uuid4().hex[:8]}",
        )
        await consumer.start()
        self._consumer = consumer
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not consumer.assignment():
            if loop.time() > deadline:
                raise RuntimeError(f"topic {self.topic!r} has no partitions; create it first (processor.topics does)")
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records = 0
        while True:
            behind = [tp for tp in partitions if await consumer.position(tp) < end[tp]]
            if not behind:
                break
            if loop.time() > deadline:
                raise RuntimeError(f"the articles topic {self.topic!r} was not read to its end in {timeout_s:.0f} s")
            records += self._apply(await consumer.getmany(*behind, timeout_ms=500, max_records=10_000))
        log.info("catalogue: %d articles from %d records of %s", len(self.catalogue), records, self.topic)
        return records

    async def follow(self) -> None:
        """Apply what the platform publishes from now on; runs until cancelled or broken."""
        assert self._consumer is not None, "start() first"
        while True:
            self._apply(await self._consumer.getmany(timeout_ms=1000, max_records=10_000))

    def _apply(self, batches: dict) -> int:
        records = 0
        for batch in batches.values():
            for record in batch:
                records += 1
                try:
                    self.catalogue.apply(*parse_article_record(record.key, record.value))
                except ValueError as error:
                    log.warning("skipping article record at %s:%d: %s", record.topic, record.offset, error)
        return records

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


async def publish_articles(
    bootstrap: str, topic: str, articles: Iterable[Article] = (), removed: Iterable[str] = ()
) -> None:
    """Publish articles (and tombstones) to the articles topic, as the platform does."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, article_to_json(a), key=a.id.encode()) for a in articles]
        sent += [await producer.send(topic, None, key=article_id.encode()) for article_id in removed]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def main(argv: list[str]) -> int:
    from gateway.config import GatewayConfig

    config = GatewayConfig.from_env()
    if argv[:1] == ["seed"] and len(argv) == 1:
        articles, removed = list(SEEDED), []
    elif argv[:1] == ["put"] and len(argv) == 3:
        try:
            articles, removed = [article_from_doc({"id": argv[1], "title": argv[2]})], []
        except ValueError as error:
            print(f"not an article: {error}", file=sys.stderr)
            return 2
    elif argv[:1] == ["delete"] and len(argv) == 2 and is_valid_id(argv[1]):
        articles, removed = [], [argv[1]]
    else:
        print("usage:" + __doc__.split("::", 1)[1].rstrip(), file=sys.stderr)
        return 2
    asyncio.run(publish_articles(config.kafka_bootstrap, config.articles_topic, articles, removed))
    print(f"published {len(articles)} articles and {len(removed)} removals to {config.articles_topic}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main(sys.argv[1:]))
