"""Versioned JSON Schemas of every message on every topic and on the websocket."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

SCHEMA_DIR = Path(__file__).parent


@cache
def load(name: str) -> dict:
    """The schema document ``name`` (for example ``"clap-recorded.v1"``)."""
    return json.loads((SCHEMA_DIR / f"{name}.json").read_text())
