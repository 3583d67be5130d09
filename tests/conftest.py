"""Shared fixtures: the real Kafka and Cassandra, and unique names so runs never collide.

Tests that need the real services fail, never skip, when the services do not answer: CI starts
them with ``deploy/local/services.sh up`` (``make test`` does), and a plain ``pytest`` tries the
same script once.
"""
from __future__ import annotations

import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.processes import REPO

# The session-wide distributed deployment (`pipeline`) for integration and browser tests.
pytest_plugins = ["tests.support.pipeline"]

KAFKA = ("127.0.0.1", 9092)
CASSANDRA = ("127.0.0.1", 9042)


def _answers(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def real_services() -> None:
    if not (_answers(KAFKA) and _answers(CASSANDRA)):
        result = subprocess.run(["bash", str(REPO / "deploy/local/services.sh"), "up"], capture_output=True, text=True)
        if result.returncode != 0 or not (_answers(KAFKA) and _answers(CASSANDRA)):
            pytest.fail(
                "Kafka and Cassandra are not answering and `deploy/local/services.sh up` could not start them:\n"
                + result.stdout[-2000:] + result.stderr[-2000:]
            )


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def log_dir(run_id: str) -> Path:
    path = REPO / ".run" / "test-logs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path
