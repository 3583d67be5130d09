"""One logging setup for every service: JSON lines for log collectors, or text for people.

``LOG_FORMAT`` (read by each service's config) picks ``json`` or ``text``; deploy/k8s sets json,
local runs default to text. A JSON line holds the time, level, logger, service and message, and
the context a call passes in ``extra``: ``log.warning("clap %s not logged", id,
extra={"clap_id": id, "article": article})`` gives ``"clap_id"`` and ``"article"`` fields, so a
collector can find every line about one clap or one article without parsing the message.
"""
from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Any

import orjson

FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Every attribute a plain LogRecord has: whatever else a record carries came in through `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object on one line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        # default=str: a context value that is not JSON (an exception, a path) is still written.
        return orjson.dumps(doc, default=str).decode()


def formatter(service: str, log_format: str) -> logging.Formatter:
    if log_format not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    return JsonFormatter(service) if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def setup_logging(service: str, log_format: str, level: int = logging.INFO) -> None:
    """Send every record of the process to stdout, in ``log_format``, once."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter(service, log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # Python's warnings as records too, not bare lines on stderr


def faust_logging_config(service: str, log_format: str) -> dict[str, Any] | None:
    """Faust's worker replaces the root handlers with its own when it starts: in JSON mode, this
    ``logging_config`` (merged into Faust's) makes that handler write JSON too. Text: Faust's own."""
    formatter(service, log_format)  # refuse an unknown format here, at start
    if log_format == "text":
        return None
    return {
        "merge": True,
        "formatters": {"json": {"()": JsonFormatter, "service": service}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    }
