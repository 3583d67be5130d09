"""Plain HTTP responses for the websockets server's ``process_request`` hook."""
from __future__ import annotations

import http
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


def respond(
    status: int,
    body: bytes,
    content_type: str,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
            *extra_headers,
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def json_response(status: int, doc: object, extra_headers: Iterable[tuple[str, str]] = ()) -> Response:
    return respond(status, orjson.dumps(doc), "application/json", extra_headers)


def json_error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": code, "message": message})


def html_response(body: str, extra_headers: Iterable[tuple[str, str]] = ()) -> Response:
    return respond(200, body.encode(), "text/html; charset=utf-8", extra_headers)


def split_path(request: Request) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(request.path)
    return parts.path, parse_qs(parts.query)


def cookie(request: Request, name: str) -> str | None:
    for header in request.headers.get_all("Cookie"):
        for pair in header.split(";"):
            key, _, value = pair.strip().partition("=")
            if key == name:
                return value
    return None
