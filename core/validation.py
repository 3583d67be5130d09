"""Parsing and validation of what a websocket client sends.

Every refusal is a :class:`Refused` with a stable ``code`` that the gateway sends back as an
``error`` message; nothing a client sends can raise anything else.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

MAX_CLAPS_PER_MESSAGE = 50
MAX_MESSAGE_BYTES = 1024
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Refused(Exception):
    """A client message that the server will not act on."""

    def __init__(self, code: str, message: str, clap_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.clap_id = clap_id


@dataclass(frozen=True, slots=True)
class Join:
    """``with_mine`` False: a page that lists articles wants totals only, not the reader's own
    count (which would cost a store read per listed article)."""

    article: str
    with_mine: bool = True


@dataclass(frozen=True, slots=True)
class Leave:
    article: str


@dataclass(frozen=True, slots=True)
class Clap:
    article: str
    count: int
    clap_id: str


@dataclass(frozen=True, slots=True)
class Undo:
    """Take back every clap this reader has counted on ``article``; ``undo_id`` is its idempotency key."""

    article: str
    undo_id: str


ClientMessage = Join | Leave | Clap | Undo


def is_valid_id(value: object) -> bool:
    """Article, user and clap ids all match ``[A-Za-z0-9_-]{1,64}``."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def parse_client_message(raw: bytes | str) -> ClientMessage:
    """Parse one websocket text frame from a client, or raise :class:`Refused`."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Refused("bad_request", f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refused("bad_request", "message is not valid JSON") from None
    if not isinstance(doc, dict):
        raise Refused("bad_request", "message must be a JSON object")
    kind = doc.get("type")
    raw_id = doc.get("id")
    clap_id = raw_id if is_valid_id(raw_id) else None
    article = doc.get("article")
    if kind not in ("join", "leave", "clap", "undo"):
        raise Refused("bad_request", "type must be one of join, leave, clap, undo", clap_id)
    if not is_valid_id(article):
        raise Refused("bad_request", "article must match [A-Za-z0-9_-]{1,64}", clap_id)
    if kind == "join":
        return Join(article, doc.get("mine") is not False)
    if kind == "leave":
        return Leave(article)
    if clap_id is None:
        raise Refused("bad_request", f"{kind} id must match [A-Za-z0-9_-]{{1,64}}")
    if kind == "undo":
        return Undo(article, clap_id)
    count = doc.get("count")
    # bool is an int in Python; a client sending true must not clap once.
    if not isinstance(count, int) or isinstance(count, bool):
        raise Refused("bad_count", "count must be an integer", clap_id)
    if not 1 <= count <= MAX_CLAPS_PER_MESSAGE:
        raise Refused("bad_count", f"count must be between 1 and {MAX_CLAPS_PER_MESSAGE}", clap_id)
    return Clap(article, count, clap_id)


def normalize_origin(origin: str) -> str:
    """``Scheme://host[:port]`` compared case-insensitively, without a trailing slash."""
    return origin.strip().rstrip("/").lower()


def is_allowed_origin(origins: list[str], host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a websocket handshake with these ``Origin`` header values may proceed.

    No ``Origin`` at all is a client that is not a browser (another service): it is served,
    since the token, not the page, is what lets it clap. A browser always sends exactly one;
    it must be the gateway's own (``http(s)://`` + the request's ``Host``) or one listed in
    ``allowed`` (normalized with :func:`normalize_origin`). Anything else, ``null`` or several
    values included, is a page of another site and is refused.
    """
    if not origins:
        return True
    if len(origins) != 1:
        return False
    origin = normalize_origin(origins[0])
    if origin in allowed:
        return True
    scheme, separator, authority = origin.partition("://")
    return (
        bool(separator) and scheme in ("http", "https") and host is not None
        and authority == host.strip().lower()
    )
