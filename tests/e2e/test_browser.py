"""Real Chromium against the reader pages.

A click in one page moves the count in another page on the same article only (embedded and
distributed). In the embedded mode also: "you: n/50" comes from the server, a clap batch the log
refused is retried with the same id and counted once, the shown number never dips during a burst,
and a page whose gateway goes away moves to the next one and re-sends what was not acked.
Screenshots go to the test run's log directory.
"""
from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import expect

from tests.support.clients import Reader, http_json, new_token
from tests.support.inprocess import FailingAppends, HeldAcks, InProcessService, SlowAppends

LIVE_S = 15_000  # ms: what a page may take to connect and show a total on this shared machine

# Samples the shown number on every animation frame, i.e. every number a reader could have seen.
START_SAMPLING = """() => {
  const el = document.getElementById("count");
  window.shown = [];
  const sample = () => {
    window.shown.push(Number(el.textContent));
    if (!window.stopSampling) requestAnimationFrame(sample);
  };
  requestAnimationFrame(sample);
}"""


async def check_live_counts(browser, base_url: str, article: str, other: str, log_dir) -> None:
    context_a = await browser.new_context()
    context_b = await browser.new_context()
    page_a, page_b = await context_a.new_page(), await context_b.new_page()
    bystander = await context_b.new_page()
    await page_a.goto(f"{base_url}/articles/{article}")
    await page_b.goto(f"{base_url}/articles/{article}")
    await bystander.goto(f"{base_url}/articles/{other}")
    for page in (page_a, page_b, bystander):
        await expect(page.locator("#status")).to_have_text("live", timeout=LIVE_S)
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
    await page_c.screenshot(path=str(log_dir / f"browser-{article}.png"))
    await context_a.close()
    await context_b.close()


async def test_browser_embedded(browser, embedded, log_dir):
    await check_live_counts(browser, embedded.base_url, "hello-claps", "slow-readers", log_dir)


@pytest.mark.services
async def test_browser_distributed(browser, pipeline, log_dir):
    await check_live_counts(browser, pipeline.base_url, "counting-at-scale", "why-logs-win", log_dir)


async def wait_counted(base_url: str, article: str, total: int) -> None:
    for _ in range(200):
        if (await asyncio.to_thread(http_json, f"{base_url}/api/articles/{article}/claps"))["total"] == total:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{article} never reached {total}")


async def test_mine_comes_from_the_server_on_every_load(browser, embedded, log_dir):
    url = f"{embedded.base_url}/articles/why-logs-win"
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url)
    await expect(page.locator("#mine")).to_have_text("you: 0/50", timeout=LIVE_S)
    for _ in range(3):
        await page.click("#clap")
    await expect(page.locator("#mine")).to_have_text("you: 3/50")
    await wait_counted(embedded.base_url, "why-logs-win", 3)

    await page.reload()
    await expect(page.locator("#mine")).to_have_text("you: 3/50", timeout=LIVE_S)
    await expect(page.locator("#count")).to_have_text("3")
    # Nothing of it lives in the browser's storage: the identity (the cookie) is what counts.
    await page.evaluate("() => { localStorage.clear(); sessionStorage.clear(); }")
    await page.reload()
    await expect(page.locator("#mine")).to_have_text("you: 3/50", timeout=LIVE_S)
    await page.screenshot(path=str(log_dir / "browser-mine-after-clearing-storage.png"))
    other_tab = await context.new_page()
    await other_tab.goto(url)
    await expect(other_tab.locator("#mine")).to_have_text("you: 3/50", timeout=LIVE_S)

    # Another reader (cookies cleared: a new identity) has clapped nothing here.
    await context.clear_cookies()
    await page.reload()
    await expect(page.locator("#mine")).to_have_text("you: 0/50", timeout=LIVE_S)
    await expect(page.locator("#count")).to_have_text("3")
    await context.close()


async def test_a_refused_append_is_retried_with_the_same_id_and_counted_once(browser, tmp_path, log_dir):
    service = await InProcessService(tmp_path, wrap_log=lambda index, log: FailingAppends(log, 2)).start()
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{service.url()}/articles/hello-claps")
        await expect(page.locator("#mine")).to_have_text("you: 0/50", timeout=LIVE_S)
        for _ in range(3):
            await page.click("#clap")
        await wait_counted(service.url(), "hello-claps", 3)
        await expect(page.locator("#count")).to_have_text("3")
        await expect(page.locator("#mine")).to_have_text("you: 3/50")
        await expect(page.locator("#status")).to_have_text("live")
        # The clicks made one batch, or more on a slow machine; the first two appends were refused.
        refused, logged = service.logs[0].refused, service.logged_ids()
        assert len(refused) == 2
        assert set(refused) <= set(logged)  # each refused batch was retried with its id ...
        assert len(logged) == len(set(logged))  # ... and logged once
        await page.screenshot(path=str(log_dir / "browser-retried-append.png"))
        await context.close()
    finally:
        await service.stop()


async def test_the_shown_count_never_dips_during_a_clap_burst(browser, tmp_path, log_dir):
    # Every append takes 300 ms, so the page's batches are sent but not yet counted while totals
    # that include another reader's claps arrive: the moments a total-plus-unsent count dipped.
    service = await InProcessService(tmp_path, wrap_log=lambda index, log: SlowAppends(log, 0.3)).start()
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{service.url()}/articles/slow-readers")
        await expect(page.locator("#mine")).to_have_text("you: 0/50", timeout=LIVE_S)
        other = await Reader.open(service.ws_url(), await asyncio.to_thread(new_token, service.url()))

        async def other_reader_claps() -> None:
            for index in range(20):
                await other.clap("slow-readers", 1, f"other-{index}")
                await asyncio.sleep(0.08)

        await page.evaluate(START_SAMPLING)
        others = asyncio.create_task(other_reader_claps())
        for _ in range(30):  # about 2 s of clicks: several batches in flight at every moment
            await page.click("#clap")
            await page.wait_for_timeout(40)
        await others
        await wait_counted(service.url(), "slow-readers", 50)
        await expect(page.locator("#count")).to_have_text("50")
        await page.wait_for_timeout(300)
        shown = await page.evaluate("() => { window.stopSampling = true; return window.shown; }")
        await page.screenshot(path=str(log_dir / "browser-burst.png"))
        dips = [(before, after) for before, after in zip(shown, shown[1:]) if after < before]
        assert dips == []
        assert (shown[0], shown[-1]) == (0, 50)
        assert await page.locator("#mine").inner_text() == "you: 30/50"
        await other.close()
        await context.close()
    finally:
        await service.stop()


async def test_a_page_moves_to_the_next_gateway_and_resends_what_was_not_acked(browser, tmp_path, log_dir):
    # Appends are held far longer than the test runs: the acks are lost only by the stop.
    service = await InProcessService(
        tmp_path, gateways=2, wrap_log=lambda index, log: HeldAcks(log), append_timeout_s=120.0
    ).start()
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{service.url(0)}/articles/hello-claps")
        await expect(page.locator("#mine")).to_have_text("you: 0/50", timeout=LIVE_S)
        # The page starts at a random gateway of its list; hold the acks of the one it chose.
        holding = [len(gateway.readers) for gateway in service.gateways]
        assert sorted(holding) == [0, 1]
        first, second = holding.index(1), holding.index(0)
        held = service.logs[first].held
        service.logs[first].holding = True
        for _ in range(3):
            await page.click("#clap")
        for _ in range(100):  # the clicks' batches (one, or more on a slow machine) are in the log
            if sum(held.values()) == 3:
                break
            await asyncio.sleep(0.05)
        assert sum(held.values()) == 3
        # Counted, but never acked: the page cannot tell that the total already holds its
        # batches, so until the re-sent ones are acked it shows them on top (docs/PROTOCOL.md).
        await wait_counted(service.url(second), "hello-claps", 3)
        await expect(page.locator("#count")).to_have_text("6")

        await service.stop_gateway(first)  # their acks are lost with it
        for _ in range(200):  # the page notices the close and connects to the other gateway
            if len(service.gateways[second].readers) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(service.gateways[second].readers) == 1
        await expect(page.locator("#status")).to_have_text("live", timeout=LIVE_S)
        await wait_counted(service.url(second), "hello-claps", 3)
        await expect(page.locator("#count")).to_have_text("3")
        await expect(page.locator("#mine")).to_have_text("you: 3/50")
        twice = sorted(list(held) * 2)
        for _ in range(100):  # re-sent with the same ids: in the log twice, counted once
            if sorted(service.logged_ids()) == twice:
                break
            await asyncio.sleep(0.05)
        assert sorted(service.logged_ids()) == twice
        await page.wait_for_timeout(300)
        assert (await asyncio.to_thread(http_json, f"{service.url(second)}/api/articles/hello-claps/claps"))["total"] == 3
        await expect(page.locator("#count")).to_have_text("3")
        await page.screenshot(path=str(log_dir / "browser-after-gateway-stop.png"))
        await context.close()
    finally:
        await service.stop()


# -- undo, "+N", the last minute, keyboard and screen readers ------------------------------------


async def check_undo(browser, base_url: str, article: str, log_dir, name: str) -> None:
    """A reader claps, then takes it back: every page sees the total fall, "you" goes to 0, and
    they may clap again."""
    undoer_context, watcher_context = await browser.new_context(), await browser.new_context()
    undoer, watcher = await undoer_context.new_page(), await watcher_context.new_page()
    for page in (undoer, watcher):
        await page.goto(f"{base_url}/articles/{article}")
        await expect(page.locator("#mine")).to_have_text("you: 0/50", timeout=LIVE_S)
    await expect(undoer.locator("#undo")).to_be_disabled()  # nothing to take back yet
    start = int(await watcher.locator("#count").inner_text())
    for _ in range(4):
        await undoer.click("#clap")
    await expect(watcher.locator("#count")).to_have_text(str(start + 4), timeout=15_000)
    await expect(undoer.locator("#mine")).to_have_text("you: 4/50")
    await expect(undoer.locator("#undo")).to_be_enabled(timeout=15_000)
    await undoer.screenshot(path=str(log_dir / f"browser-{name}-before-undo.png"))

    await undoer.click("#undo")
    await expect(undoer.locator("#mine")).to_have_text("you: 0/50")
    await expect(watcher.locator("#count")).to_have_text(str(start), timeout=15_000)
    await expect(undoer.locator("#count")).to_have_text(str(start), timeout=15_000)
    await wait_counted(base_url, article, start)
    await expect(undoer.locator("#undo")).to_be_disabled()
    await undoer.screenshot(path=str(log_dir / f"browser-{name}-after-undo.png"))
    await watcher.screenshot(path=str(log_dir / f"browser-{name}-watcher-after-undo.png"))

    for _ in range(2):  # the cap starts again from zero
        await undoer.click("#clap")
    await expect(watcher.locator("#count")).to_have_text(str(start + 2), timeout=15_000)
    await expect(undoer.locator("#mine")).to_have_text("you: 2/50")
    await wait_counted(base_url, article, start + 2)
    await undoer.reload()
    await expect(undoer.locator("#count")).to_have_text(str(start + 2), timeout=LIVE_S)
    await expect(undoer.locator("#mine")).to_have_text("you: 2/50", timeout=LIVE_S)
    await undoer_context.close()
    await watcher_context.close()


async def test_browser_undo_embedded(browser, embedded, log_dir):
    await check_undo(browser, embedded.base_url, "slow-readers", log_dir, "undo-embedded")


@pytest.mark.services
async def test_browser_undo_distributed(browser, pipeline, log_dir):
    await check_undo(browser, pipeline.base_url, "why-logs-win", log_dir, "undo-distributed")


async def test_others_claps_show_as_a_burst_and_in_the_last_minute(browser, embedded, log_dir):
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{embedded.base_url}/articles/hello-claps")
    await expect(page.locator("#mine")).to_have_text("you: 0/50", timeout=LIVE_S)
    await expect(page.locator("#minute")).to_have_text("0 in the last minute")
    other = await Reader.open(embedded.ws_url, await asyncio.to_thread(new_token, embedded.base_url))
    await other.clap("hello-claps", 3, "burst-1")
    await expect(page.locator("#burst")).to_have_text("+3", timeout=15_000)
    await expect(page.locator("#burst")).to_have_class(re.compile(r"\bshown\b"))
    await expect(page.locator("#minute")).to_have_text("3 in the last minute")
    await page.screenshot(path=str(log_dir / "browser-burst-of-others.png"))
    # The reader's own claps are no news to them: no "+N" for those, but they are in the minute.
    await expect(page.locator("#burst")).not_to_have_class(re.compile(r"\bshown\b"), timeout=5_000)
    await page.click("#clap")
    await page.click("#clap")
    await expect(page.locator("#count")).to_have_text("5", timeout=15_000)
    await wait_counted(embedded.base_url, "hello-claps", 5)
    await expect(page.locator("#minute")).to_have_text("5 in the last minute", timeout=5_000)
    assert not await page.locator("#burst").evaluate("el => el.classList.contains('shown')")
    # A fresh page counts only what happens while it is open: the catch-up count is not news.
    fresh = await context.new_page()
    await fresh.goto(f"{embedded.base_url}/articles/hello-claps")
    await expect(fresh.locator("#status")).to_have_text("live", timeout=LIVE_S)
    await fresh.wait_for_timeout(300)
    assert await fresh.locator("#minute").inner_text() == "0 in the last minute"
    await other.close()
    await context.close()


async def test_keyboard_and_screen_reader_on_a_phone(browser, embedded, log_dir):
    context = await browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
    page = await context.new_page()
    await page.goto(f"{embedded.base_url}/articles/why-logs-win")
    await expect(page.locator("#mine")).to_have_text("you: 0/50", timeout=LIVE_S)
    # The count is announced politely, as a whole ("12 claps").
    live = page.locator("[aria-live=polite]").filter(has=page.locator("#count"))
    await expect(live).to_have_count(1)
    assert await live.get_attribute("aria-atomic") == "true"
    # Tab reaches the clap button (after the "all articles" link); Enter and Space press it.
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "clap"
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # a visible focus ring
    clap_box = await page.locator("#clap").bounding_box()
    mine_box = await page.locator("#mine").bounding_box()
    for key in ["Enter", "Space"] * 5:  # 10 claps: the count grows a digit
        await page.keyboard.press(key)
    await expect(page.locator("#count")).to_have_text("10", timeout=15_000)
    await expect(page.locator("#mine")).to_have_text("you: 10/50")
    # No layout shift when the numbers grow.
    assert await page.locator("#clap").bounding_box() == clap_box
    assert await page.locator("#mine").bounding_box() == mine_box
    # Everything fits the phone's width.
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await page.screenshot(path=str(log_dir / "browser-phone-keyboard.png"))
    # Undo is a real button too: Tab to it, press it with Enter.
    await expect(page.locator("#undo")).to_be_enabled(timeout=15_000)
    for _ in range(10):
        if await page.evaluate("document.activeElement.id") == "undo":
            break
        await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "undo"
    await page.keyboard.press("Enter")
    await expect(page.locator("#mine")).to_have_text("you: 0/50")
    await wait_counted(embedded.base_url, "why-logs-win", 0)
    await expect(page.locator("#count")).to_have_text("0")
    assert await page.locator("#clap").bounding_box() == clap_box
    await page.screenshot(path=str(log_dir / "browser-phone-after-undo.png"))
    await context.close()


async def check_the_list_moves_live(browser, base_url: str, ws_url: str, article: str, log_dir, name: str) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{base_url}/")
    await expect(page.locator("#status")).to_have_text("live", timeout=LIVE_S)
    total = page.locator(f'li[data-article="{article}"] .claps-total')
    start = int(await total.inner_text())
    other = page.locator("li[data-article] .claps-total")
    others_before = {i: await other.nth(i).inner_text() for i in range(await other.count())}
    clapper = await Reader.open(ws_url, await asyncio.to_thread(new_token, base_url))
    await clapper.clap(article, 6, f"list-{name}")
    await expect(total).to_have_text(str(start + 6), timeout=15_000)
    await page.screenshot(path=str(log_dir / f"browser-{name}.png"))
    changed = [i for i in range(await other.count()) if await other.nth(i).inner_text() != others_before[i]]
    assert len(changed) == 1  # only the clapped article's row moved
    await clapper.close()
    await context.close()


async def test_browser_list_embedded(browser, embedded, log_dir):
    await check_the_list_moves_live(browser, embedded.base_url, embedded.ws_url, "hello-claps", log_dir, "list-embedded")


@pytest.mark.services
async def test_browser_list_distributed(browser, pipeline, log_dir):
    await check_the_list_moves_live(browser, pipeline.base_url, pipeline.ws_url, "counting-at-scale", log_dir, "list-distributed")


async def check_reading_now(browser, base_url: str, article: str, log_dir, name: str) -> None:
    """Pages of one article say how many read it now; the list says it too; a page that closes
    stops counting within about 2 s."""
    first, second, lister = [await browser.new_context() for _ in range(3)]
    page_a, page_b, index = await first.new_page(), await second.new_page(), await lister.new_page()
    await page_a.goto(f"{base_url}/articles/{article}")
    await page_b.goto(f"{base_url}/articles/{article}")
    await index.goto(f"{base_url}/")
    await expect(page_a.locator("#reading")).to_have_text("2 reading now ·", timeout=LIVE_S)
    await expect(page_b.locator("#reading")).to_have_text("2 reading now ·", timeout=LIVE_S)
    row = index.locator(f'li[data-article="{article}"] .reading')
    await expect(row).to_have_text(" · 2 reading", timeout=LIVE_S)  # the list itself is not reading
    await page_a.screenshot(path=str(log_dir / f"browser-{name}.png"))
    await index.screenshot(path=str(log_dir / f"browser-{name}-list.png"))
    await second.close()
    await expect(page_a.locator("#reading")).to_have_text("1 reading now ·", timeout=4_000)
    await expect(row).to_have_text(" · 1 reading", timeout=4_000)
    await first.close()
    await lister.close()


async def test_browser_reading_now_embedded(browser, embedded, log_dir):
    await check_reading_now(browser, embedded.base_url, "slow-readers", log_dir, "reading-embedded")


@pytest.mark.services
async def test_browser_reading_now_distributed(browser, pipeline, log_dir):
    await check_reading_now(browser, pipeline.base_url, "slow-readers", log_dir, "reading-distributed")


async def test_a_page_says_catching_up_while_its_count_cannot_move_and_not_once_it_moves(browser, tmp_path, log_dir):
    service = await InProcessService(tmp_path).start()
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{service.url()}/articles/hello-claps")
        await expect(page.locator("#mine")).to_have_text("you: 0/50", timeout=LIVE_S)
        note = page.locator("#counting")
        assert await note.get_attribute("aria-live") == "polite"
        await expect(note).to_have_text("")
        await service.pause_processor()  # no status from it any more: stale after 5 s
        await expect(note).to_have_text("catching up…", timeout=(5 + 2) * 1000)
        for _ in range(3):
            await page.click("#clap")
        await expect(page.locator("#count")).to_have_text("3")  # the page shows its own claps meanwhile
        await page.screenshot(path=str(log_dir / "browser-catching-up.png"))
        await service.resume_processor()
        await expect(note).to_have_text("", timeout=LIVE_S)
        await wait_counted(service.url(), "hello-claps", 3)
        await expect(page.locator("#count")).to_have_text("3")
        await expect(page.locator("#mine")).to_have_text("you: 3/50")
        await context.close()
    finally:
        await service.stop()
