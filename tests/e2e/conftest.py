"""Fixtures for end-to-end tests: the embedded service as a real subprocess, and Chromium."""
from __future__ import annotations

import shutil
import urllib.request

import pytest

from tests.support.processes import ServiceProcess, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ADMIN_TOKEN = "e2e-admin-token"


class EmbeddedService:
    def __init__(self, data_dir, log_dir, name: str = "embedded") -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.process: ServiceProcess | None = None
        self.starts = 0

    def start(self, **extra_env: str) -> None:
        """Start (again) on the same port and data directory; ``extra_env`` overrides the test
        defaults (an empty value unsets one, e.g. ``CLAP_SECRET=""``)."""
        self.starts += 1
        env = {"CLAP_SECRET": "e2e-secret", "CLAP_ADMIN_TOKEN": ADMIN_TOKEN,
               "CLAPS_PER_SECOND": "1000", "CLAP_BURST": "1000",
               # Tests open many identities from one address; tests of the limit lower it.
               "NEW_IDENTITIES_PER_MINUTE": "100000", "NEW_IDENTITY_BURST": "100000",
               **extra_env,
               "CLAP_MODE": "embedded", "PORT": str(self.port), "CLAP_DATA_DIR": str(self.data_dir)}
        self.process = ServiceProcess(f"{self.name}-{self.starts}", ["-m", "gateway"], env, self.log_dir)
        self.process.wait_for_http(f"{self.base_url}/healthz", 30)

    def register(self, *article_ids: str, admin_token: str = ADMIN_TOKEN) -> None:
        """Publish articles the way embedded mode takes them: the admin endpoint."""
        for article_id in article_ids:
            request = urllib.request.Request(
                f"{self.base_url}/api/admin/articles/{article_id}?title={article_id}", method="PUT",
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> int | None:
        assert self.process is not None
        return self.process.stop()


@pytest.fixture
def embedded(tmp_path, log_dir):
    service = EmbeddedService(tmp_path / "data", log_dir)
    service.start()
    yield service
    if service.process is not None:
        service.stop()


@pytest.fixture(scope="session")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        await browser.close()
