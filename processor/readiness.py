"""GET /ready on the worker's web port: 200 once it counts claps, 503 while it cannot yet.

A worker cannot count while it has not joined its consumer group, while the group rebalances,
or while it restores its tables from their changelogs after an assignment; and it holds a newly
owned partition's totals back until it has read that partition's log to the end (a rebuild, or
the uncommitted tail after a crash). Claps sent meanwhile are acknowledged (they wait in the log)
but reach no total until this says ready. Kubernetes uses it as the readiness probe, and
``make up`` waits for it.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import faust
from faust.web import Request, Response, View

READY_PATH = "/ready"


@dataclass(frozen=True, slots=True)
class WorkerState:
    """What the worker's Faust app says about itself, read at one moment."""

    joined: bool  # has been given a generation by the group coordinator
    rebalancing: bool
    recovering: bool  # reading changelogs into its tables
    tables_ready: bool  # the tables of every active partition are restored
    partitions: tuple[int, ...]  # the partitions it counts (of the clap topic and its tables)
    catching_up: tuple[int, ...] = ()  # partitions whose totals are held until their log is read

    @property
    def waiting_for(self) -> str | None:
        """Why the worker cannot count yet, or None when it can."""
        if not self.joined:
            return "joining the consumer group"
        if self.rebalancing:
            return "rebalancing"
        if self.recovering or not self.tables_ready:
            return "restoring tables from the changelog"
        if self.catching_up:
            return "catching up with the clap log"
        return None

    def to_dict(self) -> dict[str, Any]:
        waiting_for = self.waiting_for
        return {
            "ready": waiting_for is None,
            "waiting_for": waiting_for,
            "partitions": list(self.partitions),
            "catching_up": list(self.catching_up),
        }


def observe(app: faust.App, catching_up: Collection[int] = ()) -> WorkerState:
    recovery = app.tables.recovery
    changelogs = {table.changelog_topic_name for table in app.tables.values()}
    return WorkerState(
        joined=app.consumer_generation_id > 0,
        rebalancing=bool(app.rebalancing),
        recovering=bool(recovery.in_recovery),
        tables_ready=bool(app.tables.actives_ready) and recovery.completed.is_set(),
        partitions=tuple(sorted({tp.partition for tp in app.assignor.assigned_actives() if tp.topic in changelogs})),
        catching_up=tuple(sorted(catching_up)),
    )


def add_ready_page(app: faust.App, catching_up: Callable[[], Collection[int]] = tuple, path: str = READY_PATH) -> None:
    """Serve the worker's readiness on its web server (see the module docstring).

    ``catching_up`` returns the clap partitions whose totals the agent holds back.
    """

    @app.page(path)
    async def ready(self: View, request: Request) -> Response:
        state = observe(self.app, catching_up()).to_dict()
        return self.json(state, status=200 if state["ready"] else 503)
