"""observability.logs: one JSON object per line, with the context a call passes in `extra`."""
from __future__ import annotations

import io
import logging
import logging.config

import orjson
import pytest

from observability.logs import JsonFormatter, faust_logging_config, formatter, setup_logging


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    made = logging.getLogger("gateway").makeRecord("gateway", logging.WARNING, __file__, 1, message, args, exc_info,
                                                   extra=extra)
    return made


def test_a_json_line_holds_the_message_and_the_clap_it_is_about():
    line = JsonFormatter("gateway").format(record("clap %s not logged: %r", "c-1", OSError("disk"),
                                                  clap_id="c-1", article="hello-claps"))
    doc = orjson.loads(line)
    assert "\n" not in line
    assert {k: v for k, v in doc.items() if k != "ts"} == {
        "level": "warning", "logger": "gateway", "service": "gateway",
        "message": "clap c-1 not logged: OSError('disk')", "clap_id": "c-1", "article": "hello-claps",
    }
    assert doc["ts"].endswith("+00:00")


def test_an_exception_is_one_field_of_the_same_line():
    try:
        raise ValueError("bad total")
    except ValueError:
        import sys
        line = JsonFormatter("projector").format(record("failed", exc_info=sys.exc_info()))
    doc = orjson.loads(line)
    assert doc["error"].startswith("Traceback") and doc["error"].endswith("ValueError: bad total")


def test_a_context_value_that_is_not_json_is_written_as_text():
    doc = orjson.loads(JsonFormatter("gateway").format(record("x", path=io.StringIO)))
    assert doc["path"] == str(io.StringIO)


def test_text_is_the_plain_format_and_an_unknown_format_is_refused():
    assert formatter("gateway", "text").format(record("hello")).endswith("WARNING gateway hello")
    with pytest.raises(ValueError, match="LOG_FORMAT must be one of json, text, not 'yaml'"):
        formatter("gateway", "yaml")
    with pytest.raises(ValueError):
        faust_logging_config("processor", "yaml")


def test_setup_replaces_every_root_handler_with_one_of_the_chosen_format(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("projector", "json")
        logging.getLogger("projector").info("written", extra={"article": "a"})
        out = capsys.readouterr().out.strip().splitlines()
        assert len(root.handlers) == 1
        assert orjson.loads(out[-1])["article"] == "a" and orjson.loads(out[-1])["service"] == "projector"
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        logging.captureWarnings(False)


def test_faust_gets_its_default_handler_as_json_and_text_keeps_its_own():
    assert faust_logging_config("processor", "text") is None
    config = faust_logging_config("processor", "json")
    assert config["merge"] is True and config["handlers"]["default"]["formatter"] == "json"
    stream = io.StringIO()
    logging.config.dictConfig({
        "version": 1, "disable_existing_loggers": False,
        "formatters": config["formatters"],
        "handlers": {"default": {**config["handlers"]["default"], "stream": stream}},
        "loggers": {"faust-test": {"handlers": ["default"], "level": "INFO", "propagate": False}},
    })
    logging.getLogger("faust-test").info("[^Worker]: Ready")
    assert orjson.loads(stream.getvalue())["message"] == "[^Worker]: Ready"
