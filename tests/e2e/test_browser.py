"""Real Chromium: a click in one page moves the count in another page on the same article only.

Runs against the embedded service and against the Kafka/Faust/Cassandra pipeline.
"""
from __future__ import annotations

import re

import pytest
from playwright.async_api import expect


async def check_live_counts(browser, base_url: str, article: str, other: str) -> None:
    context_a = await browser.new_context()
    context_b = await browser.new_context()
    page_a, page_b = await context_a.new_page(), await context_b.new_page()
    bystander = await context_b.new_page()
    await page_a.goto(f"{base_url}/articles/{article}")
    await page_b.goto(f"{base_url}/articles/{article}")
    await bystander.goto(f"{base_url}/articles/{other}")
    for page in (page_a, page_b, bystander):
        await expect(page.locator("#status")).to_have_text("live", timeout=15_000)
    start = int(await page_b.locator("#count").inner_text())
    other_start = await bystander.locator("#count").inner_text()

    for _ in range(3):
        await page_a.click("#clap")
    await expect(page_b.locator("#count")).to_have_text(str(start + 3), timeout=15_000)
    await expect(page_a.locator("#count")).to_have_text(str(start + 3), timeout=15_000)
    await expect(page_a.locator("#mine")).to_have_text(re.compile(r"you: 3/50"))
    await page_b.wait_for_timeout(500)
    assert await bystander.locator("#count").inner_text() == other_start

    # A fresh load shows the durable total, rendered by the server from the store.
    page_c = await context_b.new_page()
    await page_c.goto(f"{base_url}/articles/{article}")
    await expect(page_c.locator("#count")).to_have_text(str(start + 3), timeout=15_000)
    await page_c.screenshot(path=str(_screenshot_dir() / f"{article}.png"))
    await context_a.close()
    await context_b.close()


def _screenshot_dir():
    from tests.support.processes import REPO

    path = REPO / ".run" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def test_browser_embedded(browser, embedded):
    await check_live_counts(browser, embedded.base_url, "hello-claps", "slow-readers")


@pytest.mark.services
async def test_browser_distributed(browser, pipeline):
    await check_live_counts(browser, pipeline.base_url, "counting-at-scale", "why-logs-win")
