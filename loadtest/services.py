"""Servers the load test starts itself: the embedded gateway, the baseline, the Node reference, and py-spy.

Each is a child process whose pid is recorded when it starts; stopping sends SIGTERM to that
pid only (SIGKILL after a grace period), never to a process found by name.
"""
from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.httpclient import HttpError, request_json, wait_healthy

REPO_ROOT = Path(__file__).resolve().parent.parent
# Gateways this tool starts: every clapper session is a new identity from one loopback address,
# far past the per-address limit meant for browsers; and the admin token that lets this tool
# publish its articles to the embedded gateways it starts.
EMBEDDED_ADMIN_TOKEN = secrets.token_urlsafe(24)
LOAD_TOOL_ENV = {"NEW_IDENTITIES_PER_MINUTE": "10000000", "NEW_IDENTITY_BURST": "10000000"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    base_url: str
    env: dict[str, str] = field(default_factory=dict)
    cleanup_dir: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    async def stop(self, grace_s: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.popen.wait, grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                await asyncio.to_thread(self.popen.wait, 5)
        if self.cleanup_dir is not None:
            shutil.rmtree(self.cleanup_dir, ignore_errors=True)
        return self.popen.returncode


def _spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


async def _wait_ready(process: ManagedProcess, timeout_s: float) -> None:
    waiter = asyncio.create_task(wait_healthy(process.base_url, timeout_s))
    while not waiter.done():
        if process.popen.poll() is not None:
            waiter.cancel()
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode}; see {process.log_path}")
        await asyncio.sleep(0.1)
    waiter.result()


async def start_embedded_gateway(
    log_dir: Path, env_overrides: dict[str, str], *, port: int | None = None, keep_data: bool = False
) -> ManagedProcess:
    """``python -m gateway`` in embedded mode on a free port with a fresh data directory."""
    port = port or free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="lt-data-"))
    settings = {"CLAP_MODE": "embedded", "HOST": "127.0.0.1", "PORT": str(port), "CLAP_DATA_DIR": str(data_dir),
                "CLAP_ADMIN_TOKEN": EMBEDDED_ADMIN_TOKEN, **LOAD_TOOL_ENV, **env_overrides}
    env = {**os.environ, **settings, "PYTHONPATH": str(REPO_ROOT)}
    log_path = log_dir / "gateway.log"
    popen = _spawn("gateway", [sys.executable, "-m", "gateway"], env, log_path)
    shown = {k: ("(set)" if k == "CLAP_ADMIN_TOKEN" else v) for k, v in settings.items()}
    process = ManagedProcess("gateway", popen, log_path, f"http://127.0.0.1:{port}", shown,
                             None if keep_data else data_dir)
    try:
        await _wait_ready(process, 60)
    except BaseException:
        await process.stop()
        raise
    return process


DISTRIBUTED_ENV = {
    # The same settings as `make up` (Makefile DIST_ENV): the gateways share its Kafka, Cassandra,
    # processor and projector.
    "CLAP_MODE": "distributed",
    "KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "CASSANDRA_HOSTS": "127.0.0.1",
    "CLAP_SECRET": os.environ.get("CLAP_SECRET", "local-dev-secret-change-me"),
}


async def start_distributed_gateway(
    log_dir: Path, env_overrides: dict[str, str], *, name: str, port: int | None = None
) -> ManagedProcess:
    """``python -m gateway`` in distributed mode on a free port, against the `make up` services."""
    port = port or free_port()
    settings = {**DISTRIBUTED_ENV, **LOAD_TOOL_ENV, "HOST": "127.0.0.1", "PORT": str(port), "GATEWAY_NAME": name,
                **env_overrides}
    env = {**os.environ, **settings, "PYTHONPATH": str(REPO_ROOT)}
    log_path = log_dir / "gateway.log"
    popen = _spawn(name, [sys.executable, "-m", "gateway"], env, log_path)
    shown = {k: ("(set)" if k == "CLAP_SECRET" else v) for k, v in settings.items()}
    process = ManagedProcess(name, popen, log_path, f"http://127.0.0.1:{port}", shown)
    try:
        await _wait_ready(process, 90)
    except BaseException:
        await process.stop()
        raise
    return process


async def publish_articles_with_admin(base_urls: list[str], article_ids: list[str], admin_token: str) -> None:
    """Embedded gateways take articles through their admin endpoint (docs/PROTOCOL.md)."""
    gate = asyncio.Semaphore(16)

    async def one(base_url: str, article_id: str) -> None:
        async with gate:
            await request_json("PUT", f"{base_url}/api/admin/articles/{article_id}?title={article_id}",
                               headers={"Authorization": f"Bearer {admin_token}"})

    await asyncio.gather(*(one(base, article_id) for base in base_urls for article_id in article_ids))


async def publish_articles_to_topic(base_urls: list[str], article_ids: list[str], timeout_s: float = 60.0) -> None:
    """Distributed gateways follow the platform's articles topic (KAFKA_BOOTSTRAP, ARTICLES_TOPIC,
    defaults as `make up`); publish there, then wait until every gateway has the last one (the
    topic has one partition, so the last one known means all are)."""
    from gateway.articles import Article
    from gateway.catalogue import publish_articles

    await publish_articles(os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"), os.environ.get("ARTICLES_TOPIC", "articles"),
                           [Article(article_id, article_id) for article_id in article_ids])
    deadline = asyncio.get_running_loop().time() + timeout_s
    for base_url in base_urls:
        while True:
            try:
                await request_json("GET", f"{base_url}/api/articles/{article_ids[-1]}/claps")
                break
            except (HttpError, OSError, TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{base_url} did not learn of the published articles in {timeout_s:.0f} s") from None
                await asyncio.sleep(0.2)


async def start_baseline(log_dir: Path, *, port: int | None = None) -> ManagedProcess:
    port = port or free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    argv = [sys.executable, "-m", "loadtest.baseline", "--port", str(port)]
    popen = _spawn("baseline", argv, env, log_dir / "baseline.log")
    process = ManagedProcess("baseline", popen, log_dir / "baseline.log", f"http://127.0.0.1:{port}")
    try:
        await _wait_ready(process, 30)
    except BaseException:
        await process.stop()
        raise
    return process


REFERENCE_DIR = REPO_ROOT / "loadtest" / "reference"


def ensure_reference_installed() -> None:
    """``npm ci`` the reference's locked packages into loadtest/reference/node_modules (git-ignored),
    once, and again whenever package-lock.json is newer than the install."""
    stamp = REFERENCE_DIR / "node_modules" / ".package-lock.json"
    lock = REFERENCE_DIR / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("the reference server needs Node.js and npm (apt-get install nodejs npm)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--omit=dev"], cwd=REFERENCE_DIR, check=True,
                   stdin=subprocess.DEVNULL, timeout=300)


async def start_reference(log_dir: Path, *, window_ms: int = 100, port: int | None = None) -> ManagedProcess:
    """The ideal reference (loadtest/reference/server.js): our public contract from memory, in Node."""
    await asyncio.to_thread(ensure_reference_installed)
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("the reference server needs Node.js (apt-get install nodejs)")
    port = port or free_port()
    argv = [node, str(REFERENCE_DIR / "server.js"), "--port", str(port), "--window-ms", str(window_ms)]
    popen = _spawn("reference", argv, dict(os.environ), log_dir / "reference.log")
    process = ManagedProcess("reference", popen, log_dir / "reference.log", f"http://127.0.0.1:{port}",
                             {"window_ms": str(window_ms)})
    try:
        await _wait_ready(process, 30)
    except BaseException:
        await process.stop()
        raise
    return process


# -- py-spy, to see where a gateway's time goes during the measured phase -----------------------


def py_spy_path() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start_py_spy(pid: int, seconds: float, out_path: Path) -> subprocess.Popen[bytes] | None:
    """Sample ``pid`` for ``seconds`` into collapsed stacks (``--format raw``); None if not installed."""
    binary = py_spy_path()
    if binary is None:
        return None
    argv = [binary, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "100",
            "--format", "raw", "--output", str(out_path), "--nonblocking"]
    with open(out_path.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


_LINE_NUMBER = re.compile(r":\d+\)$")


def summarize_collapsed(path: Path, top: int = 25) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive time shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"self": [], "inclusive": []}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]  # per function, not per line
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return {"self": [], "inclusive": []}
    return {
        "self": [(f, round(c / total, 4)) for f, c in own.most_common(top)],
        "inclusive": [(f, round(c / total, 4)) for f, c in inclusive.most_common(top)],
    }
