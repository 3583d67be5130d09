"""The distributed deployment in miniature: real Kafka and Cassandra, and the project's own
processor (Faust), projector and gateway as subprocesses on names unique to this run."""
from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from gateway.articles import Article
from gateway.catalogue import publish_articles
from processor.config import ProcessorConfig
from processor.topics import ensure_topics
from tests.support.processes import ServiceProcess, free_port


@dataclass
class Pipeline:
    base_url: str
    ws_url: str
    env: dict[str, str]
    keyspace: str
    processor: ServiceProcess
    projector: ServiceProcess
    gateway: ServiceProcess
    processor_metrics_url: str = ""
    projector_metrics_url: str = ""


def pipeline_env(run_id: str, name: str) -> dict[str, str]:
    return {
        "CLAP_MODE": "distributed",
        "KAFKA_BOOTSTRAP": "127.0.0.1:9092",
        "CASSANDRA_HOSTS": "127.0.0.1",
        "CLAP_TOPIC": f"it-{run_id}-{name}-claps",
        "COUNTS_TOPIC": f"it-{run_id}-{name}-counts",
        "ARTICLES_TOPIC": f"it-{run_id}-{name}-articles",
        "PRESENCE_TOPIC": f"it-{run_id}-{name}-presence",
        "CLAP_PARTITIONS": "4",
        "CASSANDRA_KEYSPACE": f"it_{run_id}_{name}",
        "PROCESSOR_APP_PREFIX": f"it-{run_id}-{name}",
        "PROJECTOR_GROUP": f"it-{run_id}-{name}-projector",
        "CLAP_SECRET": "integration-secret",
        "CLAP_WINDOW_MS": "100",
        "CLAPS_PER_SECOND": "1000",
        "CLAP_BURST": "1000",
        # Every test identity comes from 127.0.0.1.
        "NEW_IDENTITIES_PER_MINUTE": "100000",
        "NEW_IDENTITY_BURST": "100000",
    }


def start_pipeline(run_id: str, name: str, log_dir, **extra_env: str) -> Pipeline:
    env = {**pipeline_env(run_id, name), **extra_env}
    # In a thread of its own: callers may already run an event loop (Playwright, pytest-asyncio).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, ensure_topics(ProcessorConfig.from_env(env))).result()
    port, processor_web_port, projector_metrics_port = free_port(), free_port(), free_port()
    processor = ServiceProcess(
        f"{name}-processor", ["-m", "processor", "worker", "-l", "info"],
        {**env, "PROCESSOR_WEB_PORT": str(processor_web_port), "PROCESSOR_STATE_DIR": str(log_dir / "processor-state")}, log_dir,
    )
    projector = ServiceProcess(
        f"{name}-projector", ["-m", "projector"], {**env, "PROJECTOR_METRICS_PORT": str(projector_metrics_port)}, log_dir
    )
    gateway = ServiceProcess(f"{name}-gateway", ["-m", "gateway"], {**env, "PORT": str(port)}, log_dir)
    base_url = f"http://127.0.0.1:{port}"
    try:
        gateway.wait_for_http(f"{base_url}/healthz", 60)
        projector.wait_for_log("projector consuming", 60)
        processor.wait_for_log("Ready", 90)
    except BaseException:
        for process in (gateway, projector, processor):  # leave nothing running behind a failure
            process.stop()
        raise
    return Pipeline(base_url, f"ws://127.0.0.1:{port}/ws", env, env["CASSANDRA_KEYSPACE"], processor, projector, gateway,
                    f"http://127.0.0.1:{processor_web_port}/metrics", f"http://127.0.0.1:{projector_metrics_port}/metrics")


def start_processor(pipeline: Pipeline, name: str, log_dir, **env: str) -> ServiceProcess:
    """Another Faust worker of the same app (or, with CLAP_EPOCH, of a rebuild)."""
    return ServiceProcess(
        name, ["-m", "processor", "worker", "-l", "info"],
        {**pipeline.env, "PROCESSOR_WEB_PORT": str(free_port()), "PROCESSOR_STATE_DIR": str(log_dir / "processor-state"), **env},
        log_dir,
    )


@contextmanager
def running_pipeline(run_id: str, name: str, log_dir, **extra_env: str) -> Iterator[tuple[Pipeline, list[ServiceProcess]]]:
    """A pipeline, plus a list where a test registers the extra processes it starts."""
    started = start_pipeline(run_id, name, log_dir, **extra_env)
    extra: list[ServiceProcess] = []
    try:
        yield started, extra
    finally:
        for process in [*extra, started.gateway, started.projector, started.processor]:
            process.stop()


@pytest.fixture(scope="session")
def pipeline(real_services, run_id, log_dir):
    with running_pipeline(run_id, "main", log_dir) as (started, _):
        yield started


async def register_articles(pipeline: Pipeline, *article_ids: str, gateways: list[str] | None = None,
                            timeout_s: float = 30) -> None:
    """Publish articles to the run's articles topic, as the platform does, and wait until every
    gateway (the pipeline's, or the base URLs given) knows them. The topic has one partition,
    so a gateway that knows the last one knows them all."""
    await publish_articles(pipeline.env["KAFKA_BOOTSTRAP"], pipeline.env["ARTICLES_TOPIC"],
                           [Article(article_id, article_id) for article_id in article_ids])

    def known(base_url: str) -> bool:
        try:
            with urllib.request.urlopen(f"{base_url}/api/articles/{article_ids[-1]}/claps", timeout=5) as response:
                return response.status == 200
        except urllib.error.HTTPError:
            return False

    for base_url in gateways or [pipeline.base_url]:
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(known, base_url):
            assert time.monotonic() < deadline, f"{base_url} did not learn of {article_ids[-1]} in {timeout_s} s"
            await asyncio.sleep(0.1)


def cassandra_total(keyspace: str, article: str) -> tuple[int, int] | None:
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=9042)
    try:
        session = cluster.connect()
        row = session.execute(f"SELECT total, seq FROM {keyspace}.article_totals WHERE article = %s", (article,)).one()
        return (row.total, row.seq) if row else None
    finally:
        cluster.shutdown()
