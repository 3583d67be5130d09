"""The three ports between the gateway, the processor and the store.

Each has an embedded adapter (one process, no servers) and a distributed one (Kafka, Faust,
Cassandra). ``tests/contract/`` runs one suite per port against both.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Protocol

from core.messages import ClapRecorded, CountChanged, CountingStatus


class ClapLog(Protocol):
    """The durable, replayable log of clap events, keyed by article."""

    def append(self, clap: ClapRecorded) -> Awaitable[int]:
        """An awaitable of the event's offset in its article's partition, done once the event is
        durable; it raises if the event could not be made so (nothing is acked then). A coroutine
        function fits; the embedded log hands back a future, so a caller needs no task to wait."""

    async def close(self) -> None: ...


class CountFeed(Protocol):
    """The fan-out of numbered totals from the processor to every gateway, and of the processor's
    counting statuses (``CountingStatus``), each on the partition of the articles it speaks for."""

    @property
    def partitions(self) -> int | None:
        """How many partitions the fan-out has (articles are spread by ``core.routing.shard_of``);
        known once subscribed."""

    async def publish(self, updates: Sequence[CountChanged | CountingStatus]) -> None: ...

    async def subscribe(self) -> AsyncIterator[CountChanged | CountingStatus]:
        """Totals and statuses published after this returns, totals in order per article.

        An adapter may deliver only the articles being followed, and only the statuses of their
        partitions (a gateway filters by room anyway).
        """

    def follow(self, article: str) -> None:
        """A room for ``article`` opened here: its totals are wanted from now on. Idempotent."""

    def unfollow(self, article: str) -> None:
        """The room closed: the adapter may stop delivering the article's totals. Idempotent."""

    async def followed(self, article: str) -> None:
        """Return once every total of a followed ``article`` published from now on will be
        delivered; a room reads its first total from the store after this."""

    async def close(self) -> None: ...


class CounterStore(Protocol):
    """Durable absolute totals per article; the source of the count a page shows at load.

    ``write`` keeps, per article, the total at the highest ``(epoch, seq)`` it has been given:
    writing an older or equal position again changes nothing, so replays and retries are safe.
    """

    async def write(self, totals: Sequence[CountChanged]) -> None: ...

    async def read(self, article: str) -> CountChanged | None: ...

    async def read_mine(self, article: str, user: str) -> int:
        """How many of ``user``'s claps on ``article`` are counted (0 if none), for "you: n/50"."""

    async def close(self) -> None: ...
