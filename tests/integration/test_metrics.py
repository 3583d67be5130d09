"""Every service's /metrics, scraped after real claps through Kafka, Faust and Cassandra: the
counters that must have moved moved by exactly what was sent, and the lags end at zero."""
from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest

from tests.support.clients import Reader, new_token
from tests.support.pipeline import cassandra_total, register_articles, running_pipeline
from tests.support.observability import queried_metrics
from tests.support.scrape import Samples, scrape, value, values

pytestmark = pytest.mark.services

# (count, id): one reader's clap batches; the last resends the first id, as a page retrying an
# unconfirmed clap does: a second event in the log, acked again, counted once.
CLAPS = [(3, "m-1"), (5, "m-2"), (1, "m-3"), (7, "m-4"), (2, "m-5"), (3, "m-1")]
EXPECTED_TOTAL = 3 + 5 + 1 + 7 + 2


async def acked(pipeline, count: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        samples, _ = await asyncio.to_thread(scrape, f"{pipeline.base_url}/metrics")
        if value(samples, "gateway_claps_acked_total") >= count:
            return True
        await asyncio.sleep(0.05)
    return False


async def settled(pipeline, predicate, timeout_s: float) -> tuple[Samples, Samples, Samples]:
    """Scrape all three services until ``predicate(gateway, processor, projector)`` holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        scraped = await asyncio.gather(
            asyncio.to_thread(scrape, f"{pipeline.base_url}/metrics"),
            asyncio.to_thread(scrape, pipeline.processor_metrics_url),
            asyncio.to_thread(scrape, pipeline.projector_metrics_url),
        )
        gateway, processor, projector = (samples for samples, _ in scraped)
        if predicate(gateway, processor, projector) or time.monotonic() > deadline:
            return gateway, processor, projector
        await asyncio.sleep(0.5)


def lags_are_zero(samples: Samples, name: str, partitions: int) -> bool:
    lags = values(samples, name)
    return len(lags) >= partitions and all(v == 0 for v in lags.values())


async def test_each_service_counts_exactly_the_claps_sent(real_services, run_id, log_dir):
    # JSON logs, as deployed: the same run checks that every service writes them.
    with running_pipeline(run_id, "metrics", log_dir, LOG_FORMAT="json") as (pipeline, _):
        started = time.monotonic()
        article = f"metered-{uuid.uuid4().hex[:6]}"
        await register_articles(pipeline, article)
        clapper = await Reader.open(pipeline.ws_url, new_token(pipeline.base_url))
        anonymous = await Reader.open(pipeline.ws_url)
        await anonymous.join(article)  # a room here, so the gateway receives the article's totals
        assert await anonymous.wait_for(lambda r: r.totals.get(article) == 0, 20)
        for sent, (count, clap_id) in enumerate(CLAPS, start=1):
            await clapper.clap(article, count, clap_id)
            # One at a time, each acked before the next: the retry is a second event in the log.
            assert await acked(pipeline, sent, 20), f"clap {sent} ({clap_id}) not acked: {clapper.errors}"
        await anonymous.clap(article, 1, "nobody")
        await clapper.clap("no-such-article", 1, "lost")
        assert await clapper.wait_for(lambda r: len(r.errors) == 1, 10) and await anonymous.wait_for(lambda r: r.errors, 10)
        assert await anonymous.wait_for(lambda r: r.totals.get(article) == EXPECTED_TOTAL, 30)
        test_took_s = time.monotonic() - started

        partitions = int(pipeline.env["CLAP_PARTITIONS"])

        def done(gateway: Samples, processor: Samples, projector: Samples) -> bool:
            return (value(processor, "processor_events_total") == len(CLAPS)
                    and value(projector, "projector_records_total", kind="total")
                    == value(processor, "processor_announcements_total")
                    and lags_are_zero(processor, "processor_lag", partitions)
                    and lags_are_zero(projector, "projector_lag", partitions))

        gateway, processor, projector = await settled(pipeline, done, 60)

        # The gateway: every clap message acked (the retry too), each refusal under its code.
        assert value(gateway, "gateway_claps_acked_total") == len(CLAPS)
        assert value(gateway, "gateway_claps_refused_total", code="unauthenticated") == 1
        assert value(gateway, "gateway_claps_refused_total", code="not_found") == 1
        assert value(gateway, "gateway_connections") == 2
        assert value(gateway, "gateway_max_connections") == 18000
        # Every total it received carried its newest clap's time, and each was timed once, no older
        # than the claps of this test (the reader saw the final total through them).
        received = value(gateway, "gateway_updates_received_total")
        assert received >= 1  # the reader's final total came through the feed
        assert value(gateway, "gateway_count_age_seconds_count") == received
        assert 0 <= value(gateway, "gateway_count_age_seconds_sum") <= received * test_took_s
        # The processor: one event per clap message in the log, none malformed, every batch timed.
        assert value(processor, "processor_events_total") == len(CLAPS)
        assert value(processor, "processor_malformed_events_total") == 0
        assert value(processor, "processor_catching_up_partitions") == 0
        assert len(values(processor, "processor_lag")) == partitions
        assert all(v == 0 for v in values(processor, "processor_lag").values())
        # Its heap steward (observability/heap.py) keeps running: each tick (1 s) collects the
        # young generations and reports the pauses timed since the last, so 3.5 s later at least
        # two more are in (three ticks, with a margin for a busy loop; CPython's own collections
        # add to them: a floor, not an exact count); and no sweep is due in the first 15 minutes.
        young_before = value(processor, "processor_gc_pause_seconds_count", generation="1")
        await asyncio.sleep(3.5)
        later, _ = await asyncio.to_thread(scrape, pipeline.processor_metrics_url)
        assert value(later, "processor_gc_pause_seconds_count", generation="1") >= young_before + 2
        assert value(later, "processor_gc_sweeps_total") == 0
        # The projector: it consumed every total the processor announced; one article, so each
        # batch with totals wrote exactly one row, timed once.
        announced = value(processor, "processor_announcements_total")
        assert value(projector, "projector_records_total", kind="total") == announced
        assert value(projector, "projector_rows_written_total", kind="total") == value(
            projector, "projector_write_seconds_count", kind="total")
        assert value(projector, "projector_write_retries_total") == 0
        # Each total row written was timed from its newest clap once (one article: a row a batch).
        rows = value(projector, "projector_rows_written_total", kind="total")
        assert value(projector, "projector_count_age_seconds_count") == rows
        assert 0 <= value(projector, "projector_count_age_seconds_sum") <= rows * (time.monotonic() - started)
        # One clapper, so each batch with per-user records wrote exactly one row too.
        assert value(projector, "projector_rows_written_total", kind="user") == value(
            projector, "projector_write_seconds_count", kind="user")
        assert all(v == 0 for v in values(projector, "projector_lag").values())
        assert (cassandra_total(pipeline.keyspace, article) or (0,))[0] == EXPECTED_TOTAL

        # Every series the dashboard and the alert rules query is in what the services export.
        scraped = {name for samples in (gateway, processor, projector) for name, _ in samples}
        assert {name: sorted(where) for name, where in queried_metrics().items() if name not in scraped} == {}

        for client in (clapper, anonymous):
            await client.close()
        for service, process in (("gateway", pipeline.gateway), ("processor", pipeline.processor),
                                 ("projector", pipeline.projector)):
            lines = json_log_lines(process.log_text())
            assert {line["service"] for line in lines} == {service}
        # Faust's own records go through the same JSON formatter.
        assert any(line["logger"].startswith("faust") and "Ready" in line["message"]
                   for line in json_log_lines(pipeline.processor.log_text()))


def json_log_lines(text: str) -> list[dict]:
    """Every line of a service's output, each required to be one JSON log record."""
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "service", "message"} <= set(line) for line in lines)
    return lines
