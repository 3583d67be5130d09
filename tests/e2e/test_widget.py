"""The embeddable widget (/widget.js, <clap-button>) on pages of other origins, in real Chromium.

The embedding "sites" are small HTTP servers on other loopback ports: other origins. One is listed
in CLAP_ALLOWED_ORIGINS, one is not. Screenshots go to the test run's log directory.
"""
from __future__ import annotations

import asyncio
import http.server
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager

from playwright.async_api import expect

from tests.e2e.conftest import EmbeddedService
from tests.e2e.test_browser import LIVE_S, wait_counted
from tests.support.processes import free_port

HOST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>News</title></head><body>
<h1>A news site</h1><p>Some story.</p>
<script src="{gateway}/widget.js"></script>
<clap-button article="hello-claps"></clap-button>
<clap-button article="why-logs-win"></clap-button>
</body></html>"""


@contextmanager
def site(gateway: str, port: int | None = None):
    """A site of its own origin (a loopback port of its own) that embeds the widget."""
    page = HOST_PAGE.format(gateway=gateway).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def session_headers(base_url: str, origin: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(f"{base_url}/api/session", method="POST", headers={"Origin": origin})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


async def test_the_widget_claps_live_from_an_allowed_site_and_keeps_its_identity(browser, tmp_path, log_dir):
    service = EmbeddedService(tmp_path / "data", log_dir, name="widget")
    allowed_port = free_port()
    allowed = f"http://127.0.0.1:{allowed_port}"
    service.start(CLAP_ALLOWED_ORIGINS=allowed)
    try:
        with site(service.base_url) as other_site:
            # CORS for the allowed site only; the other is refused before any identity is made.
            status, headers = await asyncio.to_thread(session_headers, service.base_url, allowed)
            assert (status, headers.get("Access-Control-Allow-Origin"), headers.get("Vary")) == (200, allowed, "Origin")
            status, headers = await asyncio.to_thread(session_headers, service.base_url, other_site)
            assert (status, headers.get("Access-Control-Allow-Origin")) == (403, None)
            # A page from a site that is not listed gets neither a count nor a working button.
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(other_site)
            await page.wait_for_timeout(2000)
            widget = page.locator('clap-button[article="hello-claps"]')
            assert await widget.locator(".count").inner_text() == "–"
            await expect(widget.locator("button")).to_be_disabled()
            await page.screenshot(path=str(log_dir / "widget-not-allowed.png"))
            await context.close()

        # The allowed site: the server on the port the gateway was told about.
        with site(service.base_url, allowed_port):
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(allowed)
            hello = page.locator('clap-button[article="hello-claps"]')
            other = page.locator('clap-button[article="why-logs-win"]')
            await expect(hello.locator(".mine")).to_have_text("you: 0/50", timeout=LIVE_S)
            await expect(hello.locator(".count")).to_have_text("0")
            for _ in range(3):
                await hello.locator("button").click()
            await expect(hello.locator(".count")).to_have_text("3", timeout=15_000)
            await expect(hello.locator(".mine")).to_have_text("you: 3/50")
            await wait_counted(service.base_url, "hello-claps", 3)
            await expect(other.locator(".count")).to_have_text("0")
            await page.screenshot(path=str(log_dir / "widget-after-claps.png"))
            # The identity lives in the site's own storage, not in a (blocked) third-party cookie.
            assert await page.evaluate(f"localStorage.getItem('clap-token@{service.base_url}')")
            assert await context.cookies(service.base_url) == []
            await page.reload()
            await expect(hello.locator(".mine")).to_have_text("you: 3/50", timeout=LIVE_S)
            await expect(hello.locator(".count")).to_have_text("3")
            # Another visitor of the site sees the count live and has clapped nothing.
            visitor = await (await browser.new_context()).new_page()
            await visitor.goto(allowed)
            visitor_hello = visitor.locator('clap-button[article="hello-claps"]')
            await expect(visitor_hello.locator(".mine")).to_have_text("you: 0/50", timeout=LIVE_S)
            await hello.locator("button").click()
            await expect(visitor_hello.locator(".count")).to_have_text("4", timeout=15_000)
            await visitor.screenshot(path=str(log_dir / "widget-other-visitor.png"))
            await visitor.context.close()
            await context.close()
    finally:
        service.stop()

