"""SREs rebuild counts by replaying the clap log at a new epoch: same totals, higher position."""
from __future__ import annotations

import uuid

import pytest

from tests.support.clients import Reader, http_json, new_token, wait_all
from tests.support.pipeline import cassandra_total, register_articles, running_pipeline, start_processor

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def replayable(real_services, run_id, log_dir):
    with running_pipeline(run_id, "replay", log_dir) as started:
        yield started


async def test_a_rebuild_at_a_new_epoch_reproduces_every_total_and_outranks_the_old(replayable, log_dir):
    pipeline, extra = replayable
    articles = [f"replay-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    await register_articles(pipeline, *articles)
    clappers = [await Reader.open(pipeline.ws_url, new_token(pipeline.base_url)) for _ in range(4)]
    expected = {}
    for a_index, article in enumerate(articles):
        for u_index, clapper in enumerate(clappers):
            for batch in range(3):
                await clapper.clap(article, 10 + a_index + u_index, f"{article}-{u_index}-{batch}")
        expected[article] = sum(min(3 * (10 + a_index + u), 50) for u in range(4))
    assert await wait_all(clappers, lambda r: len(r.acks) == 9, 20)
    reader = await Reader.open(pipeline.ws_url)
    for article in articles:
        await reader.join(article)
    assert await reader.wait_for(lambda r: all(r.totals.get(a) == expected[a] for a in articles), 30)
    assert all(reader.positions[a][0] == 1 for a in articles)

    # The rebuild: the old processor stops, a new one at epoch 2 reads the log from offset 0.
    pipeline.processor.stop()
    # Default settings but small batches, so the rebuild of this small log takes several
    # batches and must hold its partial totals back until it reaches the log's end.
    rebuilt = start_processor(pipeline, "replay-processor-e2", log_dir, CLAP_EPOCH="2", PROCESSOR_MAX_BATCH="10")
    extra.append(rebuilt)
    assert await reader.wait_for(lambda r: all(r.positions[a][0] == 2 for a in articles), 90)
    assert {a: reader.totals[a] for a in articles} == expected
    assert reader.out_of_order == 0
    assert reader.drops == 0, "a reader saw a partial rebuilt total below the real one"
    assert "caught up with the clap log" in rebuilt.log_text()
    for article in articles:
        rest = http_json(f"{pipeline.base_url}/api/articles/{article}/claps")
        assert (rest["total"], rest["epoch"]) == (expected[article], 2)
        assert cassandra_total(pipeline.keyspace, article)[0] == expected[article]

    # New claps after the rebuild count once, at the new epoch.
    fresh = await Reader.open(pipeline.ws_url, new_token(pipeline.base_url))
    await fresh.clap(articles[0], 5, "after-rebuild")
    assert await reader.wait_for(lambda r: r.totals[articles[0]] == expected[articles[0]] + 5, 20)
    for client in [reader, fresh, *clappers]:
        await client.close()
