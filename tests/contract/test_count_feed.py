"""The count feed port: a subscriber sees what is published after it subscribed, in order."""
import asyncio

from core.messages import CountChanged


async def collect(updates, n, timeout_s=20):
    got = []

    async def run():
        async for update in updates:
            got.append(update)
            if len(got) >= n:
                return

    await asyncio.wait_for(run(), timeout_s)
    return got


async def test_subscribers_receive_published_totals_in_order(count_feed):
    first = await count_feed.subscribe()
    second = await count_feed.subscribe()
    updates = [CountChanged("a", seq * 2, 2, seq, 1, 0) for seq in range(1, 6)]
    await count_feed.publish(updates)
    for subscriber in (first, second):
        got = await collect(subscriber, 1)
        # A conflating feed may skip to the newest total; an ordered one delivers every one.
        assert got[-1] in updates
        rest = [] if got[-1] == updates[-1] else await collect(subscriber, updates.index(updates[-1]) - updates.index(got[-1]))
        received = got + rest
        positions = [u.position() for u in received]
        assert positions == sorted(positions)
        assert received[-1] == updates[-1]


async def test_totals_of_other_articles_are_not_lost(count_feed):
    subscriber = await count_feed.subscribe()
    await count_feed.publish([CountChanged(f"art{i}", i, i, 1, 1, 0) for i in range(10)])
    got = {}
    async def run():
        async for update in subscriber:
            got[update.article] = update.total
            if len(got) == 10:
                return
    await asyncio.wait_for(run(), 20)
    assert got == {f"art{i}": i for i in range(10)}
