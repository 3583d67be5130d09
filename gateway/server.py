"""The gateway: websocket readers, claps into the log, totals out to the right rooms.

Rules live in ``core``; this module only moves bytes between sockets and the three ports.
"""
from __future__ import annotations

import asyncio
import hmac
import html
import logging
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State

from core.identity import issue_token, verify_token
from core.messages import ClapRecorded, CountChanged, CountingStatus, undo_recorded
from core.ports import ClapLog, CounterStore, CountFeed
from core.ratelimit import KeyedRateLimiter, TokenBucket
from core.validation import (
    Clap,
    Join,
    Leave,
    Refused,
    Undo,
    is_allowed_origin,
    is_valid_id,
    normalize_origin,
    parse_client_message,
)
from gateway import articles, pages
from gateway.catalogue import Catalogue, EmbeddedArticles, article_from_doc
from gateway.config import GatewayConfig
from gateway.counting import CountingNotices
from gateway.health import Outages
from gateway.http import cookie, html_response, json_error, json_response, respond, split_path
from gateway.presence import LocalPresenceBus, Presence, PresenceBus
from gateway.rooms import Reader, RoomRegistry, text_frame
from observability.freshness import COUNT_AGE_BUCKETS_S, age_s

log = logging.getLogger("gateway")

TOKEN_COOKIE = "clap_token"
_CLAPS_PATH = re.compile(r"^/api/articles/([^/]+)/claps$")
_ARTICLE_PAGE = re.compile(r"^/articles/([^/]+)$")
_ADMIN_ARTICLE = re.compile(r"^/api/admin/articles/([^/]+)$")
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}
# The REST API's OpenAPI 3.1 document, kept by hand; tests/e2e/test_openapi.py holds it to what
# this module answers.
OPENAPI = (Path(__file__).parent / "openapi.json").read_bytes()
CLAP_LOG = "clap log"
COUNTER_STORE = "counter store"
# A room whose first store read failed tries again after each of these (seconds), then waits
# for a live total from the feed: never a made-up zero that a later total would have to undo.
ROOM_LOAD_RETRIES_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# Articles one GET /api/claps may ask for: a feed page's worth, and one answer of bounded size.
TOTALS_PER_READ_MOST = 100


class StoreUnavailable(Exception):
    """The counter store did not answer and this gateway holds no live total to answer with."""


def _total_doc(total: CountChanged) -> dict[str, object]:
    """A total as the REST API answers it (docs/PROTOCOL.md): no delta or time, only the position."""
    return {"article": total.article, "total": total.total, "seq": total.seq, "epoch": total.epoch}


def zero_total(article: str) -> CountChanged:
    """What an article that nobody has clapped for looks like: below every real position."""
    return CountChanged(article, 0, 0, 0, 0, 0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge("gateway_connections", "Open websocket connections", registry=self.registry)
        self.max_connections = Gauge(
            "gateway_max_connections", "Connections this gateway holds before refusing more (MAX_CONNECTIONS)",
            registry=self.registry,
        )
        self.rooms = Gauge("gateway_rooms", "Articles with at least one reader here", registry=self.registry)
        self.claps_acked = Counter("gateway_claps_acked", "Clap batches durably logged", registry=self.registry)
        self.claps_refused = Counter(
            "gateway_claps_refused", "Client messages refused", ["code"], registry=self.registry
        )
        self.updates_in = Counter("gateway_updates_received", "Totals received from the feed", registry=self.registry)
        self.frames_out = Gauge("gateway_frames_written", "Count frames written to readers", registry=self.registry)
        self.frames_conflated = Gauge(
            "gateway_frames_conflated", "Frames replaced by a newer one while a reader's socket was full", registry=self.registry
        )
        self.backlogged_readers = Gauge(
            "gateway_backlogged_readers", "Readers whose socket is full, holding at most one frame per room", registry=self.registry
        )
        self.refused_connections = Counter(
            "gateway_connections_refused", "Connections refused at capacity", registry=self.registry
        )
        self.refused_handshakes = Counter(
            "gateway_handshakes_refused", "Websocket handshakes and sessions refused for a foreign Origin",
            registry=self.registry,
        )
        self.identities = Counter(
            "gateway_identities", "New identities, issued or refused past the per-address limit", ["outcome"],
            registry=self.registry,
        )
        self.room_pass = Histogram("gateway_room_pass_seconds", "One fan-out trip round a room above the chunk size",
                                   buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1, 2.5), registry=self.registry)
        self.room_rate = Gauge("gateway_room_updates_per_second", "Totals per second each reader of a room above "
                               "the chunk size gets", ["article"], registry=self.registry)
        self.rooms_near_floor = Gauge("gateway_rooms_near_floor", "Rooms whose passes take over 80 % of the "
                                      "cadence floor's interval: the gateway takes no new connections",
                                      registry=self.registry)
        self.gc_pause = Histogram("gateway_gc_pause_seconds", "The event loop stopped for one garbage collection "
                                  "(generation 2: a full one)", ["generation"],
                                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1), registry=self.registry)
        self.count_age = Histogram(
            "gateway_count_age_seconds", "From the newest clap in a total reaching a gateway to this gateway "
            "receiving the total: how far behind the claps the counts its readers see are, before fan-out",
            buckets=COUNT_AGE_BUCKETS_S, registry=self.registry)
        self.append_seconds = Histogram(
            "gateway_clap_append_seconds", "From a clap handed to the clap log to it being durable there "
            "(acked by Kafka's in-sync replicas, or fsynced embedded): the wait before its ack",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5), registry=self.registry)
        self.gc_sweeps = Counter("gateway_gc_sweeps", "Full collections of the frozen heap (observability/heap.py)",
                                 registry=self.registry)


class AppendDeadlines:
    """Appends waiting to be durable, oldest first, each given up ``timeout_s`` after it began.

    One timer for all of them rather than one per clap (a timer and a wrapping task per clap cost
    more than the rest of a clap's handling in this process): every append gets the same timeout,
    so deadlines come in the order appends begin and only the oldest unfinished one needs watching.
    Giving up cancels the append, as ``asyncio.wait_for`` would; it may still land in the log,
    and a retry with the same id counts once.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._waiting: deque[tuple[float, asyncio.Future[int]]] = deque()
        self._started = asyncio.Event()

    def __len__(self) -> int:
        return len(self._waiting)

    def watch(self, append: asyncio.Future[int], now: float) -> None:
        self._waiting.append((now + self.timeout_s, append))
        if len(self._waiting) == 1:
            self._started.set()

    def expire(self, now: float) -> float | None:
        """Cancel the appends past their deadline at ``now`` and forget finished ones; return the
        next deadline to look again at, None when nothing is waiting."""
        waiting = self._waiting
        while waiting:
            deadline, append = waiting[0]
            if not append.done():
                if deadline > now:
                    return deadline
                append.cancel()
            waiting.popleft()
        return None

    async def run(self, forget_every_s: float = 0.25) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline = self.expire(loop.time())
            if deadline is None:
                self._started.clear()
                await self._started.wait()
            else:
                # Also wake to forget finished appends (most finish within milliseconds, in the
                # order they began), so the queue holds about forget_every_s of claps, not timeout_s.
                await asyncio.sleep(min(deadline - loop.time(), forget_every_s))


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        clap_log: ClapLog,
        store: CounterStore,
        feed: CountFeed,
        *,
        catalogue: Catalogue | None = None,
        article_admin: EmbeddedArticles | None = None,
        presence_bus: PresenceBus | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.config = config
        self.clap_log = clap_log
        self.store = store
        self.feed = feed
        # The articles readers may join and clap for; the admin writes them in embedded mode only
        # (distributed: the platform publishes them to the articles topic).
        self.catalogue = catalogue if catalogue is not None else Catalogue(articles.SEEDED)
        self.article_admin = article_admin
        self.clock_ms = clock_ms
        self.identity_limiter = KeyedRateLimiter(
            config.identities_per_minute / 60, config.identity_burst, config.identity_limiter_addresses
        )
        self.rooms = RoomRegistry(write_buffer_high=config.write_buffer_high, chunk=config.fanout_chunk,
                                  yields=config.fanout_yields, floor=config.cadence_floor,
                                  on_open=self._room_opened, on_close=self._room_closed,
                                  on_pass=lambda room, seconds: self.metrics.room_pass.observe(seconds))
        # Whether each room's count is live or catching up with the processor (gateway/counting.py).
        self.counting = CountingNotices(self.rooms, clock_ms, stale_ms=round(config.counting_stale_s * 1000))
        self.metrics = Metrics()
        self.metrics.max_connections.set(config.max_connections)
        self.readers: set[Reader] = set()
        self.connections_closed = 0  # ever, here: what the heap steward sweeps after (observability/heap.py)
        self._loading: dict[str, asyncio.Task[None]] = {}
        self.outages = Outages()
        # Join answers being prepared, per reader: bounded by the rooms a reader may hold.
        self._answering: dict[Reader, set[str]] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.appends = AppendDeadlines(config.append_timeout_s)
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Who reads what now, over every gateway. Readers of the article list join its articles
        # with "mine": false; they are not reading those articles, so they are counted apart.
        self.presence = Presence(
            config.name, presence_bus or LocalPresenceBus(), self.rooms, self._reading_here, clock_ms,
            interval_s=config.presence_interval_s, ttl_ms=config.presence_ttl_ms,
        )
        self._listing: dict[Reader, set[str]] = {}
        self._listing_per_article: dict[str, int] = {}
        self._presence_task: asyncio.Task[None] | None = None
        self._counting_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        updates = await self.feed.subscribe()
        self.counting.start(self.feed.partitions or 1)
        self._tasks.append(asyncio.create_task(self._consume_feed(updates), name="feed"))
        self._tasks.append(asyncio.create_task(self.rooms.run_backlog_flusher(), name="backlog"))
        self._tasks.append(asyncio.create_task(self._keepalive(), name="keepalive"))
        # Without it an append that hangs would never be answered: vital.
        self._tasks.append(asyncio.create_task(self.appends.run(), name="append-deadlines"))
        # Not vital: without it readers lose "N reading now", never a count or a clap.
        self._presence_task = asyncio.create_task(self.presence.run(), name="presence")
        self._presence_task.add_done_callback(_log_presence_end)
        # Not vital either: without it readers are not told that a count is catching up.
        self._counting_task = asyncio.create_task(self.counting.run(), name="counting")
        self._counting_task.add_done_callback(_log_counting_end)
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._route,
            compression=None,  # frames are built once and shared; per-socket deflate would undo that
            max_size=4096,
            max_queue=16,
            ping_interval=None,  # one sweep pings everyone (_keepalive): no task per connection
            close_timeout=2,
        )
        log.info("gateway %s listening on http://%s:%d (%s mode)", self.config.name, self.config.host, self.port, self.config.mode)

    @property
    def background(self) -> list[asyncio.Task[None]]:
        """Tasks the gateway cannot live without: if one ends, the process should restart."""
        return list(self._tasks)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            # Stop accepting, then close every websocket with 1012 (service restart, RFC 6455
            # 7.4.1 / IANA registry): clients reconnect to another gateway at once.
            self._server.close(code=1012, reason="gateway restarting; reconnect")
            try:
                # Close handshakes are bounded by close_timeout, but a stop must be bounded
                # whatever thousands of peers do.
                await asyncio.wait_for(self._server.wait_closed(), timeout=10)
            except TimeoutError:
                log.warning("connections still closing after 10 s; stopping anyway")
        if self._presence_task is not None:
            self._presence_task.cancel()
            await asyncio.gather(self._presence_task, return_exceptions=True)
            await self.presence.stop()
        if self._counting_task is not None:
            self._counting_task.cancel()
            await asyncio.gather(self._counting_task, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.config.keepalive_s)
            readers = list(self.readers)
            for start in range(0, len(readers), self.rooms.chunk):
                self.rooms.ping_all(readers[start : start + self.rooms.chunk])
                await self.rooms.let_loop_run()  # a sweep over 18,000 sockets must not stall the loop

    async def _consume_feed(self, updates: AsyncIterator[CountChanged | CountingStatus]) -> None:
        async for update in updates:
            if isinstance(update, CountingStatus):
                self.counting.heard(update)
                continue
            self.metrics.updates_in.inc()
            if update.at_ms:
                self.metrics.count_age.observe(age_s(update.at_ms, self.clock_ms()))
            await self.rooms.publish(update)

    def _room_opened(self, article: str) -> None:
        self.feed.follow(article)
        self.counting.opened(article)

    def _room_closed(self, article: str) -> None:
        self.feed.unfollow(article)
        self.counting.closed(article)

    # -- HTTP --------------------------------------------------------------------------------

    async def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        path, query = split_path(request)
        method = request.method
        if path in ("/ws", "/api/session") and not self._origin_allowed(request):
            # A page of another site may neither read through a visitor's connection nor
            # replace the visitor's identity.
            self.metrics.refused_handshakes.inc()
            return json_error(403, "forbidden_origin", "this origin may not use this service")
        if path == "/ws":
            if len(self.readers) >= self.config.max_connections:
                self.metrics.refused_connections.inc()
                log.warning("refusing websocket: at capacity (%d connections)", len(self.readers))
                return json_error(503, "at_capacity", "this gateway holds its maximum of connections; retry another")
            return None
        if path == "/api/session":
            if method != "POST":
                return json_error(405, "method_not_allowed", f"{method} is not supported on {path}")
            return self._session(connection, request)
        if match := _ADMIN_ARTICLE.match(path):
            return await self._admin_article(request, method, match.group(1), query)
        if method != "GET":
            return json_error(405, "method_not_allowed", f"{method} is not supported on {path}")
        if path == "/api/openapi.json":
            return respond(200, OPENAPI, "application/json")
        if path == "/api/articles":
            return json_response(200, [{"id": a.id, "title": a.title} for a in self.catalogue.articles()])
        if match := _CLAPS_PATH.match(path):
            article = match.group(1)
            if not is_valid_id(article):
                return json_error(400, "bad_request", "article must match [A-Za-z0-9_-]{1,64}")
            if article not in self.catalogue:
                return json_error(404, "not_found", f"no article {article!r}")
            try:
                total = await self.read_total(article)
            except StoreUnavailable as error:
                return json_error(503, "unavailable", str(error))
            return json_response(200, _total_doc(total))
        if path == "/api/claps":
            return await self._totals(query)
        if path in ("/healthz", "/readyz"):
            # /healthz: alive. /readyz: alive and able to take more readers, so a load balancer
            # stops sending new connections to a full gateway instead of having them refused.
            # Degraded (a store away) is not ready but alive: restarting would not bring it back.
            # Counts catching up (the processor down or replaying) are said in the body only: every
            # gateway would leave the load balancer at once, and readers could not even read.
            # A room near its cadence floor makes the gateway full as well: its readers keep their
            # 4 updates a second, and new readers go where there is room (gateway/rooms.py).
            crowded = self.rooms.rooms_near_floor()
            full = len(self.readers) >= self.config.max_connections or bool(crowded)
            broken = any(task.done() for task in self._tasks)  # e.g. the feed stopped
            reasons = self.outages.reasons(self.clock_ms() / 1000)
            status = 503 if broken or (path == "/readyz" and (full or reasons)) else 200
            doc = {"status": "broken" if broken else "full" if full else "degraded" if reasons else "ok",
                   "gateway": self.config.name, "mode": self.config.mode,
                   "connections": len(self.readers), "rooms": len(self.rooms.rooms),
                   "counting": self.counting.readiness()}
            if reasons:
                doc["reasons"] = reasons
            if crowded:
                doc["near_floor"] = [{"article": room.article, "readers": len(room.readers),
                                      "pass_ms": round((room.cadence.pass_s or 0) * 1000)} for room in crowded]
            return json_response(status, doc)
        if path == "/metrics":
            self.metrics.connections.set(len(self.readers))
            self.metrics.rooms.set(len(self.rooms.rooms))
            self.metrics.frames_out.set(self.rooms.frames_written)
            self.metrics.frames_conflated.set(self.rooms.frames_conflated)
            self.metrics.backlogged_readers.set(len(self.rooms._backlogged))
            self.metrics.room_rate.clear()
            for room in self.rooms.large_rooms():
                self.metrics.room_rate.labels(room.article).set(room.cadence.updates_per_second or 0.0)
            self.metrics.rooms_near_floor.set(len(self.rooms.rooms_near_floor()))
            return respond(200, generate_latest(self.metrics.registry), "text/plain; version=0.0.4")
        if path == "/":
            return await self._index_page(query)
        if match := _ARTICLE_PAGE.match(path):
            return await self._article_page(connection, request, match.group(1))
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if path == "/widget.js":
            # Any site may load the script; only origins in CLAP_ALLOWED_ORIGINS may then get an
            # identity (/api/session) and open a websocket with it.
            return self._static("widget.js")
        return json_error(404, "not_found", f"nothing at {path}")

    async def _totals(self, query: dict[str, list[str]]) -> Response:
        """GET /api/claps?articles=A,B,...: many articles' totals in one request, for a service
        that lists articles (a feed, a search page) and for a reader of totals that must not
        cost one connection per article. Each total is read as GET /api/articles/{id}/claps reads
        it; an article not in the catalogue is named under ``not_found``, not an error of the
        whole answer, since a listing may race a deletion."""
        asked = ",".join(query.get("articles") or []).split(",")
        wanted = list(dict.fromkeys(a for a in asked if a))  # in the asked order, once each
        if not wanted:
            return json_error(400, "bad_request", "articles must list at least one article id: ?articles=A,B")
        if len(wanted) > TOTALS_PER_READ_MOST:
            return json_error(400, "bad_request", f"at most {TOTALS_PER_READ_MOST} articles per request, "
                                                  f"not {len(wanted)}")
        if bad := [a for a in wanted if not is_valid_id(a)]:
            return json_error(400, "bad_request", f"article must match [A-Za-z0-9_-]{{1,64}}: {bad[0][:80]!r}")
        # Split once, before the reads: an article published or deleted meanwhile is in one list only.
        known = [a for a in wanted if a in self.catalogue]
        not_found = [a for a in wanted if a not in self.catalogue]
        try:
            totals = await asyncio.gather(*(self.read_total(a) for a in known))
        except StoreUnavailable as error:
            return json_error(503, "unavailable", str(error))
        return json_response(200, {"totals": [_total_doc(t) for t in totals], "not_found": not_found})

    async def _index_page(self, query: dict[str, list[str]]) -> Response:
        """GET /?page=N: one page of the catalogue, as many articles as one websocket may join, so
        the page follows every total it lists over one connection (docs/PROTOCOL.md)."""
        size = self.config.max_rooms_per_connection
        listed = self.catalogue.articles()
        pages_count = max(1, -(-len(listed) // size))
        raw = (query.get("page") or ["1"])[0]
        page = int(raw) if raw.isdigit() else 0
        if not 1 <= page <= pages_count:
            return json_error(404, "not_found", f"no page {raw!r}: pages are 1 to {pages_count}")
        shown = listed[(page - 1) * size : page * size]

        async def total_or_none(article_id: str) -> CountChanged | None:
            try:
                return await self.read_total(article_id)
            except StoreUnavailable:
                return None  # the page shows a dash until the live total arrives

        totals = await asyncio.gather(*(total_or_none(a.id) for a in shown))
        return html_response(pages.index_page(list(zip(shown, totals)), page, pages_count, self.config.gateway_urls))

    async def _article_page(self, connection: ServerConnection, request: Request, article_id: str) -> Response:
        article = self.catalogue.get(article_id)
        if article is None:
            return json_error(404, "not_found", f"no article {article_id!r}")
        try:
            total = await self.read_total(article_id)
        except StoreUnavailable:
            return respond(503, pages.unavailable_page(article).encode(), "text/html; charset=utf-8", [("Retry-After", "5")])
        headers = []
        # A valid identity is never replaced. Past the address's limit the page is served
        # without one: the reader can read, and clapping answers `unauthenticated`.
        if verify_token(self.config.secret, cookie(request, TOKEN_COOKIE)) is None:
            issued = self._issue_identity(connection, request)
            if issued is not None:
                headers.append(self._cookie_header(issued[1]))
        return html_response(pages.article_page(article, total, self.config.gateway_urls), headers)

    def _session(self, connection: ServerConnection, request: Request) -> Response:
        """POST /api/session: the caller's identity if its cookie holds a valid one, else a new one.

        A page of an origin in CLAP_ALLOWED_ORIGINS (the embeddable widget on another site) may
        read the answer: CORS, without credentials (its third-party cookie would be blocked
        anyway; the widget keeps the token itself). Other origins never got this far.
        """
        response = self._new_session(connection, request)
        origins = request.headers.get_all("Origin")
        if len(origins) == 1 and normalize_origin(origins[0]) in self.config.allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = origins[0].strip()
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
            response.headers["Vary"] = "Origin"
        return response

    def _new_session(self, connection: ServerConnection, request: Request) -> Response:
        token = cookie(request, TOKEN_COOKIE)
        user = verify_token(self.config.secret, token)
        if user is None:
            issued = self._issue_identity(connection, request)
            if issued is None:
                retry_s = max(1, round(60 / max(self.config.identities_per_minute, 1e-3)))
                return json_response(
                    429, {"error": "rate_limited", "message": "too many new identities from this address; retry later"},
                    [("Retry-After", str(retry_s))],
                )
            user, token = issued
        return json_response(200, {"user": user, "token": token}, [self._cookie_header(token)])

    def _issue_identity(self, connection: ServerConnection, request: Request) -> tuple[str, str] | None:
        """A new identity, or None when the client's address has had its share (the per-user cap
        holds per identity, so identities themselves are rationed)."""
        if not self.identity_limiter.take(self._client_address(connection, request), self.clock_ms()):
            self.metrics.identities.labels("refused").inc()
            return None
        self.metrics.identities.labels("issued").inc()
        return self.new_identity()

    def _client_address(self, connection: ServerConnection, request: Request) -> str:
        if self.config.client_ip_header:
            # Set by the trusted proxy in front of every gateway; the last hop is the one it added.
            values = request.headers.get_all(self.config.client_ip_header)
            if values:
                return values[-1].split(",")[-1].strip()
        peer = connection.remote_address
        return str(peer[0]) if peer else "unknown"

    def _origin_allowed(self, request: Request) -> bool:
        hosts = request.headers.get_all("Host")
        return is_allowed_origin(
            request.headers.get_all("Origin"), hosts[0] if len(hosts) == 1 else None, self.config.allowed_origins
        )

    async def _admin_article(self, request: Request, method: str, article_id: str, query: dict[str, list[str]]) -> Response:
        """PUT /api/admin/articles/{id}?title=T[&body=B] and DELETE: embedded mode's catalogue writes."""
        if self.article_admin is None:
            return json_error(404, "not_found", "articles come from the platform's articles topic in this deployment")
        if not self._is_admin(request):
            return json_response(
                401, {"error": "unauthorized", "message": "needs Authorization: Bearer <CLAP_ADMIN_TOKEN>"},
                [("WWW-Authenticate", "Bearer")],
            )
        if method == "PUT":
            try:
                article = article_from_doc(
                    {"id": article_id, "title": (query.get("title") or [None])[0], "body": (query.get("body") or [""])[0]}
                )
            except ValueError as error:
                return json_error(400, "bad_request", str(error))
            await self.article_admin.put(article)
            return json_response(200, {"id": article.id, "title": article.title})
        if method == "DELETE":
            if not is_valid_id(article_id):
                return json_error(400, "bad_request", "article must match [A-Za-z0-9_-]{1,64}")
            await self.article_admin.remove(article_id)
            return json_response(200, {"id": article_id, "deleted": True})
        return json_error(405, "method_not_allowed", f"{method} is not supported on /api/admin/articles/{{id}}")

    def _is_admin(self, request: Request) -> bool:
        values = request.headers.get_all("Authorization")
        if not self.config.admin_token or len(values) != 1:
            return False
        scheme, _, given = values[0].partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.config.admin_token.encode())

    def _static(self, name: str) -> Response:
        path = STATIC_DIR / name
        if "/" in name or path.suffix not in STATIC_TYPES or not path.is_file():
            return json_error(404, "not_found", f"no static file {html.escape(name)!r}")
        return respond(200, path.read_bytes(), STATIC_TYPES[path.suffix])

    def new_identity(self) -> tuple[str, str]:
        user = "u" + secrets.token_hex(8)
        return user, issue_token(self.config.secret, user)

    @staticmethod
    def _cookie_header(token: str) -> tuple[str, str]:
        return ("Set-Cookie", f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=31536000")

    async def read_total(self, article: str) -> CountChanged:
        """The durable total, or the room's newer one if the store has not caught up yet.

        With the store away, the room's live total if this gateway has one; otherwise
        :class:`StoreUnavailable`, never a zero that the store may contradict.
        """
        room = self.rooms.rooms.get(article)
        live = room.latest if room is not None else None
        try:
            stored = await self._read_store(article) or zero_total(article)
        except Exception as error:
            if live is not None:
                return live
            raise StoreUnavailable(
                f"the count of {article!r} cannot be read now ({COUNTER_STORE} unavailable); retry shortly"
            ) from error
        live = room.latest if room is not None else None  # it may have moved during the read
        if live is not None and live.position() > stored.position():
            return live
        return stored

    async def _read_store(self, article: str) -> CountChanged | None:
        try:
            stored = await asyncio.wait_for(self.store.read(article), self.config.store_timeout_s)
        except Exception as error:
            self.outages.failed(COUNTER_STORE, self.clock_ms() / 1000, error)
            raise
        self.outages.recovered(COUNTER_STORE)
        return stored

    # -- websocket ---------------------------------------------------------------------------

    def _identify(self, request: Request) -> str | None:
        """The verified user of a websocket, from ?token= or the page's cookie (None: read-only)."""
        _, query = split_path(request)
        token = (query.get("token") or [None])[0] or cookie(request, TOKEN_COOKIE)
        return verify_token(self.config.secret, token)

    async def _handle(self, connection: ServerConnection) -> None:
        # Kept lean on purpose: this frame lives as long as the connection, and a gateway holds
        # its capacity in idle connections (see docs/BENCHMARKS.md, memory per connection).
        user = self._identify(connection.request)
        # An idle reader may stay for hours: do not keep the handshake's headers (3 KB of the
        # 15 KB an idle connection costs). websockets needs a request object, not its headers.
        connection.request = Request("/ws", Headers())
        connection.response = None
        reader = Reader(connection.transport)
        _tune_socket(connection.transport.get_extra_info("socket"), self.config.socket_send_buffer)
        # Most readers never clap: the clapping state is made on the first clap, which keeps an
        # idle connection small (capacity is counted in idle connections).
        bucket: TokenBucket | None = None
        room_changes: TokenBucket | None = None
        inflight: asyncio.Semaphore | None = None
        self.readers.add(reader)
        try:
            while True:
                # recv() rather than `async for`: no async generator frame per idle connection.
                raw = await connection.recv()
                if isinstance(raw, bytes):
                    await self._send_error(connection, Refused("bad_request", "send JSON text frames, not binary"))
                    continue
                try:
                    message = parse_client_message(raw)
                    if isinstance(message, (Join, Leave)):
                        if room_changes is None:
                            room_changes = TokenBucket(self.config.joins_per_second, self.config.join_burst, self.clock_ms())
                        if not room_changes.take(self.clock_ms()):
                            raise Refused("rate_limited", "too many joins and leaves; slow down")
                    if isinstance(message, Join):
                        self._require_known(message.article)
                        self._join(reader, message.article, user if message.with_mine else None, connection)
                        self._count_as_listing(reader, message.article, not message.with_mine)
                    elif isinstance(message, Leave):
                        self.rooms.leave(reader, message.article)
                        self._count_as_listing(reader, message.article, False)
                    elif isinstance(message, (Clap, Undo)):
                        # An undo is logged like a clap: same identity, same rate limit, same ack.
                        event_id = message.clap_id if isinstance(message, Clap) else message.undo_id
                        if user is None:
                            raise Refused("unauthenticated", "clapping needs a session token", event_id)
                        self._require_known(message.article, event_id)
                        now_ms = self.clock_ms()
                        if bucket is None:
                            bucket = TokenBucket(self.config.claps_per_second, self.config.clap_burst, now_ms)
                            inflight = asyncio.Semaphore(self.config.inflight_claps_per_connection)
                        if not bucket.take(now_ms):
                            raise Refused("rate_limited", "too many claps; slow down", event_id)
                        await inflight.acquire()  # backpressure: stop reading this socket
                        self._append(connection, user, message, now_ms, inflight)
                except Refused as refused:
                    await self._send_error(connection, refused)
        except ConnectionClosed:
            pass
        finally:
            self.readers.discard(reader)
            self.connections_closed += 1
            for article in list(self._listing.get(reader, ())):
                self._count_as_listing(reader, article, False)
            self.rooms.drop(reader)

    def _count_as_listing(self, reader: Reader, article: str, listing: bool) -> None:
        """Whether ``reader`` is in ``article``'s room as a list (not reading it)."""
        held = self._listing.get(reader)
        if listing and (held is None or article not in held):
            self._listing.setdefault(reader, set()).add(article)
            self._listing_per_article[article] = self._listing_per_article.get(article, 0) + 1
        elif not listing and held is not None and article in held:
            held.discard(article)
            if not held:
                del self._listing[reader]
            left = self._listing_per_article[article] - 1
            if left:
                self._listing_per_article[article] = left
            else:
                del self._listing_per_article[article]

    def _reading_here(self) -> dict[str, int]:
        """Readers of each article on this gateway, lists not counted (for the presence report)."""
        counts = {}
        for article, room in self.rooms.rooms.items():
            reading = len(room.readers) - self._listing_per_article.get(article, 0)
            if reading > 0:
                counts[article] = reading
        return counts

    def _require_known(self, article: str, clap_id: str | None = None) -> None:
        """Only the platform's articles get rooms, store reads and log entries."""
        if article not in self.catalogue:
            raise Refused("not_found", f"no article {article!r}", clap_id)

    def _join(self, reader: Reader, article: str, user: str | None, connection: ServerConnection) -> None:
        if article not in reader.articles and len(reader.articles) >= self.config.max_rooms_per_connection:
            raise Refused("too_many_rooms", f"a connection may join at most {self.config.max_rooms_per_connection} articles")
        room = self.rooms.join(reader, article)
        self.counting.joined(reader, article)
        presence = self.presence.joined(article)
        if presence is not None:
            self._spawn(self._send_text(connection, presence.decode()))
        if room.latest is None and article not in self._loading:
            # One store read per room, however many readers join at once.
            self._loading[article] = asyncio.create_task(self._load_room(article))
        if user is not None:
            answering = self._answering.setdefault(reader, set())
            if article not in answering and len(answering) < self.config.max_rooms_per_connection:
                answering.add(article)
                task = asyncio.create_task(self._answer_join(reader, connection, article, user))
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)

    async def _answer_join(self, reader: Reader, connection: ServerConnection, article: str, user: str) -> None:
        """Tell a reader with an identity how many of its claps on ``article`` are counted.

        A count frame of the room's total with ``mine`` added, for this reader alone. ``mine`` is
        read after the total was taken: in the embedded mode the store commits a user's claps with
        the totals that include them, so ``mine`` holds at least the reader's claps up to the
        frame's ``seq`` (the browser adds its own claps acked above it).
        """
        try:
            loading = self._loading.get(article)
            if loading is not None:
                await asyncio.shield(loading)
            room = self.rooms.rooms.get(article)
            if room is None or room.latest is None:
                return  # the store is away: the room's next total reaches this reader without mine
            total = room.latest
            try:
                mine = await asyncio.wait_for(self.store.read_mine(article, user), self.config.store_timeout_s)
            except Exception as error:
                self.outages.failed(COUNTER_STORE, self.clock_ms() / 1000, error)
                log.warning("reading the claps of %s on %s failed: %r", user, article, error, extra={"article": article})
                return
            if article in reader.articles:
                await self._send_json(connection, {**total.to_dict(), "mine": mine})
        finally:
            answering = self._answering.get(reader)
            if answering is not None:
                answering.discard(article)
                if not answering:
                    del self._answering[reader]

    async def _load_room(self, article: str) -> None:
        try:
            # Live totals first, then the store: a total is in one or the other, never in neither.
            await self.feed.followed(article)
            for retry_in in (*ROOM_LOAD_RETRIES_S, None):
                try:
                    stored = await self._read_store(article)
                    break
                except Exception as error:
                    if retry_in is None:
                        log.error("reading the total of %s failed %d times (%r); the room waits for a live total",
                                  article, len(ROOM_LOAD_RETRIES_S) + 1, error, extra={"article": article})
                        return
                    log.warning("reading the total of %s failed (%r); retrying in %.2f s", article, error, retry_in,
                                extra={"article": article})
                await asyncio.sleep(retry_in)
                room = self.rooms.rooms.get(article)
                if room is None or room.latest is not None:
                    return  # everyone left, or the feed brought a total meanwhile
        finally:
            self._loading.pop(article, None)
        await self.rooms.publish(stored or zero_total(article))

    def _append(
        self, connection: ServerConnection, user: str, message: Clap | Undo, now_ms: int, inflight: asyncio.Semaphore
    ) -> None:
        """Log a clap or undo and answer it once it is durable, with no task of its own.

        The append is watched by ``self.appends`` (bounded: with the log away a clapper hears so
        within append_timeout_s) and answered from its done callback (``_appended``).
        """
        if isinstance(message, Undo):
            event = undo_recorded(message.article, user, message.undo_id, now_ms)
        else:
            event = ClapRecorded(message.article, user, message.count, message.clap_id, now_ms)
        append = asyncio.ensure_future(self.clap_log.append(event))
        began = append.get_loop().time()
        self.appends.watch(append, began)
        append.add_done_callback(partial(self._appended, connection, event, inflight, began))

    def _appended(
        self, connection: ServerConnection, event: ClapRecorded, inflight: asyncio.Semaphore, began: float,
        append: asyncio.Future[int],
    ) -> None:
        inflight.release()
        if append.cancelled():
            error: BaseException | None = TimeoutError(f"not durable within {self.appends.timeout_s} s")
        else:
            error = append.exception()
        if error is not None:
            self.outages.failed(CLAP_LOG, self.clock_ms() / 1000, error)
            log.warning("%s %s not logged: %r", event.kind, event.clap_id, error,
                        extra={"clap_id": event.clap_id, "article": event.article})
            self._send_refusal_now(
                connection, Refused("unavailable", f"the {event.kind} was not confirmed; retry with the same id", event.clap_id)
            )
            return
        self.outages.recovered(CLAP_LOG)
        self.metrics.append_seconds.observe(append.get_loop().time() - began)
        self.metrics.claps_acked.inc()
        # seq: this clap is in every total of its article at this seq or above, in any epoch.
        self._send_now(connection, orjson.dumps({"type": "ack", "id": event.clap_id, "seq": append.result() + 1}))

    def _send_now(self, connection: ServerConnection, payload: bytes) -> None:
        """Send a JSON text frame from a callback: at once, or by a task if the socket is backed up."""
        if not self._write_now(connection, payload):
            self._spawn(self._send_text(connection, payload.decode()))

    def _write_now(self, connection: ServerConnection, payload: bytes) -> bool:
        return write_now(connection, payload, self.config.write_buffer_high)

    def _send_refusal_now(self, connection: ServerConnection, refused: Refused) -> None:
        self.metrics.claps_refused.labels(refused.code).inc()
        self._send_now(connection, orjson.dumps(refusal_doc(refused)))

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _send_text(self, connection: ServerConnection, text: str) -> None:
        try:
            await connection.send(text)
        except ConnectionClosed:
            pass

    async def _send_json(self, connection: ServerConnection, doc: dict) -> None:
        try:
            await connection.send(orjson.dumps(doc).decode())
        except ConnectionClosed:
            pass

    async def _send_error(self, connection: ServerConnection, refused: Refused) -> None:
        self.metrics.claps_refused.labels(refused.code).inc()
        payload = orjson.dumps(refusal_doc(refused))
        if not self._write_now(connection, payload):
            await self._send_text(connection, payload.decode())  # and stop reading until it drains


def refusal_doc(refused: Refused) -> dict[str, str]:
    doc = {"type": "error", "code": refused.code, "message": refused.message}
    if refused.clap_id is not None:
        doc["id"] = refused.clap_id
    return doc


def write_now(connection: ServerConnection, payload: bytes, write_buffer_high: int) -> bool:
    """Write a JSON text frame straight to the socket, as the rooms write count frames; False,
    writing nothing, when the socket holds ``write_buffer_high`` bytes or more.

    The caller then sends it with ``connection.send``, which waits for the socket to drain, as
    every answer did before: a client that stops reading is held back, never given an unbounded
    buffer. A connection that is closing gets nothing (True), as ``send`` would refuse it.
    """
    if connection.state is not State.OPEN:
        return True
    transport = connection.transport
    if transport.get_write_buffer_size() >= write_buffer_high:
        return False
    try:
        transport.write(small_text_frame(payload))
    except RuntimeError:
        pass  # write_eof() already called: the close handshake is under way
    return True


def small_text_frame(payload: bytes) -> bytes:
    """``rooms.text_frame(payload)``, without building a frame object for a short payload.

    RFC 6455 §5.2: FIN and the text opcode (0x81), then, for a payload under 126 bytes, its
    length in one byte with the mask bit clear (a server never masks). An ack is always that short.
    """
    if len(payload) < 126:
        return bytes((0x81, len(payload))) + payload
    return text_frame(payload)


def _log_presence_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("presence stopped: %r; readers keep their last numbers", task.exception())


def _log_counting_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("counting notices stopped: %r; readers are no longer told when counts catch up", task.exception())


def _tune_socket(sock: socket.socket | None, send_buffer: int) -> None:
    """Bound the kernel's send buffer (see ``GatewayConfig.socket_send_buffer``) and let the
    kernel find peers that vanished without a FIN, at no cost per connection here."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
