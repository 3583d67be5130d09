"""The platform's articles topic on the real Kafka: gateways follow it, serve only once they have
read it to its end, and refuse articles it does not hold (docs/PROTOCOL.md, "The articles topic")."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from gateway.articles import SEEDED, Article
from gateway.catalogue import Catalogue, KafkaCatalogueFeed, publish_articles
from processor.config import ProcessorConfig
from processor.topics import ensure_topics
from tests.support.clients import Reader, http_json, new_token
from tests.support.pipeline import register_articles
from tests.support.processes import REPO, ServiceProcess, free_port

pytestmark = pytest.mark.services

BOOTSTRAP = "127.0.0.1:9092"


def status_of(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def fresh_topics(name: str) -> ProcessorConfig:
    config = ProcessorConfig.from_env({
        "CLAP_TOPIC": f"{name}-claps", "COUNTS_TOPIC": f"{name}-counts", "ARTICLES_TOPIC": f"{name}-articles",
        "CLAP_PARTITIONS": "1", "PROCESSOR_APP_PREFIX": name, "PRESENCE_TOPIC": f"{name}-presence",
    })
    await ensure_topics(config)
    return config


async def test_a_gateway_catalogue_reads_the_topic_to_its_end_then_follows_it(real_services):
    config = await fresh_topics(f"it-articles-{uuid.uuid4().hex[:8]}")
    topic = config.articles_topic
    # Before the gateway starts: the seeded demos (ensure_topics), one more, one removed, one bad.
    await publish_articles(BOOTSTRAP, topic, [Article("early", "Early")], removed=["hello-claps"])
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
    await producer.start()
    await producer.send_and_wait(topic, b'{"id":"other","title":"Mismatch"}', key=b"bad-key")
    await producer.stop()

    catalogue = Catalogue()
    feed = KafkaCatalogueFeed(BOOTSTRAP, topic, catalogue)
    try:
        assert await feed.start() == len(SEEDED) + 3
        expected = {a.id for a in SEEDED} - {"hello-claps"} | {"early"}
        assert {a.id for a in catalogue.articles()} == expected
        assert catalogue.get("early") == Article("early", "Early")

        following = asyncio.create_task(feed.follow())
        await publish_articles(BOOTSTRAP, topic, [Article("later", "Later", "A body")], removed=["early"])
        assert await wait_for(lambda: "later" in catalogue and "early" not in catalogue, 15)
        assert catalogue.get("later") == Article("later", "Later", "A body")
        assert not following.done()
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    finally:
        await feed.close()


async def test_a_distributed_gateway_serves_only_the_topics_articles(pipeline):
    base = pipeline.base_url
    # The demo articles were published when the topic was created, so `make up` shows them.
    assert {a.id for a in SEEDED} <= {a["id"] for a in http_json(f"{base}/api/articles")}
    article = f"topic-{uuid.uuid4().hex[:6]}"
    clapper = await Reader.open(pipeline.ws_url, new_token(base))
    await clapper.join(article)
    await clapper.clap(article, 3, "before")
    assert await clapper.wait_for(lambda r: len(r.errors) == 2, 10)
    assert [(e["code"], e.get("id")) for e in clapper.errors] == [("not_found", None), ("not_found", "before")]
    assert status_of(f"{base}/api/articles/{article}/claps") == 404
    assert status_of(f"{base}/articles/{article}") == 404
    # Only the topic publishes articles here; the embedded admin endpoint does not exist.
    assert status_of(f"{base}/api/admin/articles/{article}?title=x", "PUT") == 404

    await register_articles(pipeline, article)
    await clapper.join(article)
    await clapper.clap(article, 3, "after")
    assert await clapper.wait_for(lambda r: "after" in r.acks and r.totals.get(article) == 3, 20)
    assert http_json(f"{base}/api/articles/{article}/claps")["total"] == 3
    await clapper.close()


async def test_a_gateway_answers_only_once_it_knows_every_article_published_before_it_started(pipeline, log_dir):
    name = f"it-catalogue-{uuid.uuid4().hex[:8]}"
    config = await fresh_topics(name)
    many = [Article(f"a{index}", f"Article {index}") for index in range(3000)]
    await publish_articles(BOOTSTRAP, config.articles_topic, many)
    port = free_port()
    gateway = ServiceProcess(
        f"{name}-gateway", ["-m", "gateway"],
        {**pipeline.env, "ARTICLES_TOPIC": config.articles_topic, "PORT": str(port), "GATEWAY_NAME": name}, log_dir,
    )
    try:
        await asyncio.to_thread(gateway.wait_for_http, f"http://127.0.0.1:{port}/healthz", 60)
        # The first answer already knows the last article published before the start.
        assert status_of(f"http://127.0.0.1:{port}/api/articles/a2999/claps") == 200
        assert len(http_json(f"http://127.0.0.1:{port}/api/articles")) == len(SEEDED) + 3000
    finally:
        gateway.stop()


async def test_the_command_line_publishes_and_removes_articles(real_services):
    config = await fresh_topics(f"it-cli-{uuid.uuid4().hex[:8]}")

    def cli(*args: str) -> None:
        env = {"PYTHONPATH": str(REPO), "KAFKA_BOOTSTRAP": BOOTSTRAP, "ARTICLES_TOPIC": config.articles_topic}
        subprocess.run([sys.executable, "-m", "gateway.catalogue", *args], env=env, cwd=REPO, check=True, timeout=60,
                       capture_output=True)

    await asyncio.to_thread(cli, "put", "by-hand", "By hand")
    await asyncio.to_thread(cli, "delete", "why-logs-win")
    catalogue = Catalogue()
    feed = KafkaCatalogueFeed(BOOTSTRAP, config.articles_topic, catalogue)
    try:
        await feed.start()
    finally:
        await feed.close()
    assert {a.id for a in catalogue.articles()} == {a.id for a in SEEDED} - {"why-logs-win"} | {"by-hand"}
    assert catalogue.get("by-hand") == Article("by-hand", "By hand")
