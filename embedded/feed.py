"""The embedded count feed: in-process, conflating, so a slow subscriber holds one total per article
and the newest counting status of the log's one partition."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from core.messages import CountChanged, CountingStatus, is_newer


class _Mailbox:
    def __init__(self) -> None:
        self.latest: dict[str, CountChanged] = {}
        self.statuses: dict[tuple[int, int], CountingStatus] = {}  # (partition, epoch) -> the newest
        self.ready = asyncio.Event()

    def put(self, update: CountChanged | CountingStatus) -> None:
        if isinstance(update, CountingStatus):
            self.statuses[(update.partition, update.epoch)] = update
            self.ready.set()
            return
        held = self.latest.get(update.article)
        if held is None or is_newer(update.position(), held.position()):
            self.latest[update.article] = update
            self.ready.set()


class InMemoryCountFeed:
    # The embedded log is one partition.
    partitions = 1

    def __init__(self) -> None:
        self._mailboxes: set[_Mailbox] = set()

    async def publish(self, updates: Sequence[CountChanged | CountingStatus]) -> None:
        for mailbox in self._mailboxes:
            for update in updates:
                mailbox.put(update)

    async def subscribe(self) -> AsyncIterator[CountChanged | CountingStatus]:
        mailbox = _Mailbox()
        self._mailboxes.add(mailbox)
        return self._drain(mailbox)

    async def _drain(self, mailbox: _Mailbox) -> AsyncIterator[CountChanged | CountingStatus]:
        try:
            while True:
                await mailbox.ready.wait()
                mailbox.ready.clear()
                batch, mailbox.latest = mailbox.latest, {}
                statuses, mailbox.statuses = mailbox.statuses, {}
                for update in batch.values():
                    yield update
                for status in statuses.values():
                    yield status
        finally:
            self._mailboxes.discard(mailbox)

    # In one process every total is already here: there is nothing to choose.
    def follow(self, article: str) -> None:
        return None

    def unfollow(self, article: str) -> None:
        return None

    async def followed(self, article: str) -> None:
        return None

    async def close(self) -> None:
        return None
