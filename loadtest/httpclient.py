"""A tiny HTTP/1.1 client for the gateway's JSON endpoints (one request per connection).

The gateway answers every plain HTTP request with ``Connection: close`` and a Content-Length,
so reading to EOF is enough; this keeps the load tool free of an HTTP client dependency.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


async def request_json(method: str, url: str, *, timeout_s: float = 10.0, headers: dict[str, str] | None = None) -> Any:
    return orjson.loads(await request_body(method, url, timeout_s=timeout_s, headers=headers))


async def request_body(method: str, url: str, *, timeout_s: float = 10.0, headers: dict[str, str] | None = None) -> bytes:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"need http://host:port/... not {url!r}")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: 0\r\n{extra}"
                "Connection: close\r\n\r\n".encode()
            )
            raw = await reader.read()
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 else 0
    if status != 200:
        raise HttpError(status, body)
    return body


# The most articles one GET /api/claps may name (gateway/server.py, TOTALS_PER_READ_MOST).
TOTALS_PER_REQUEST = 100


async def fetch_totals(base_url: str, articles: Sequence[str], *, timeout_s: float = 10.0,
                       parallel: int = 4) -> dict[str, int]:
    """Article -> total through ``GET /api/claps``, 100 articles a request: one read of many
    totals costs a few connections, not one per article. Raises :class:`HttpError` (or the
    connection's error) if any request failed, and a 404 one if an article is not published."""
    slots = asyncio.Semaphore(parallel)

    async def chunk(ids: Sequence[str]) -> dict[str, int]:
        async with slots:
            doc = await request_json("GET", f"{base_url}/api/claps?articles={','.join(ids)}", timeout_s=timeout_s)
        if doc["not_found"]:
            raise HttpError(404, orjson.dumps({"not_found": doc["not_found"]}))
        return {t["article"]: int(t["total"]) for t in doc["totals"]}

    chunks = [articles[i : i + TOTALS_PER_REQUEST] for i in range(0, len(articles), TOTALS_PER_REQUEST)]
    totals: dict[str, int] = {}
    for part in await asyncio.gather(*(chunk(c) for c in chunks)):
        totals.update(part)
    return totals


async def wait_healthy(base_url: str, timeout_s: float) -> dict[str, Any]:
    """Poll ``/healthz`` until it answers 200."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            return await request_json("GET", f"{base_url}/healthz", timeout_s=2.0)
        except (OSError, HttpError, TimeoutError, ValueError) as error:
            last = error
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{base_url}/healthz not healthy after {timeout_s}s: {last!r}")
