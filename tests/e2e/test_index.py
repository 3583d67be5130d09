"""The article list (GET /): one page per 16 articles, each with its total; totals-only joins."""
from __future__ import annotations

import asyncio
import re

from tests.support.clients import Reader, http_get, http_json, new_token


def listed_ids(html: str) -> list[str]:
    return re.findall(r'<li data-article="([^"]+)"', html)


async def test_the_list_comes_in_pages_of_as_many_articles_as_one_connection_may_join(embedded):
    await asyncio.to_thread(embedded.register, *(f"extra-{i:02d}" for i in range(20)))
    _, first = await asyncio.to_thread(http_get, f"{embedded.base_url}/")
    _, second = await asyncio.to_thread(http_get, f"{embedded.base_url}/?page=2")
    everything = [a["id"] for a in await asyncio.to_thread(http_json, f"{embedded.base_url}/api/articles")]
    assert len(listed_ids(first)) == 16
    assert listed_ids(first) + listed_ids(second) == everything
    assert 'rel="next" href="/?page=2"' in first and 'rel="prev" href="/?page=1"' in second
    assert (await asyncio.to_thread(http_get, f"{embedded.base_url}/?page=3"))[0] == 404
    assert (await asyncio.to_thread(http_get, f"{embedded.base_url}/?page=x"))[0] == 404


async def test_the_list_shows_each_total_rendered_by_the_server(embedded):
    clapper = await Reader.open(embedded.ws_url, await asyncio.to_thread(new_token, embedded.base_url))
    await clapper.join("why-logs-win")
    await clapper.clap("why-logs-win", 7, "listed")
    assert await clapper.wait_for(lambda r: r.totals.get("why-logs-win") == 7, 10)
    _, html = await asyncio.to_thread(http_get, f"{embedded.base_url}/")
    row = re.search(r'<li data-article="why-logs-win"[^>]*data-total="(\d+)"[^>]*>.*?claps-total">(\d+)<', html)
    assert row is not None and row.groups() == ("7", "7")
    await clapper.close()


async def test_a_join_without_mine_gets_the_total_only(embedded):
    reader = await Reader.open(embedded.ws_url, await asyncio.to_thread(new_token, embedded.base_url))
    await reader.ws.send('{"type":"join","article":"hello-claps","mine":false}')
    assert await reader.wait_for(lambda r: "hello-claps" in r.totals, 10)
    await reader.join("slow-readers")  # an ordinary join: its answer carries mine
    assert await reader.wait_for(lambda r: "slow-readers" in r.mine, 10)
    await asyncio.sleep(0.3)
    assert "hello-claps" not in reader.mine
    await reader.close()
