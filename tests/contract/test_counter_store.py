"""The counter store port: absolute totals, the highest (epoch, seq) wins, rewrites are harmless."""
import asyncio

from core.messages import CountChanged


async def test_missing_article_reads_none(counter_store):
    assert await counter_store.read("never-clapped") is None


async def test_write_then_read(counter_store):
    total = CountChanged("a", 42, 2, 7, 1, 1234)
    await counter_store.write([total])
    assert await counter_store.read("a") == total


async def test_an_older_position_never_overwrites_a_newer_one(counter_store):
    await counter_store.write([CountChanged("a", 10, 1, 5, 1, 0)])
    await counter_store.write([CountChanged("a", 8, 1, 4, 1, 0)])
    assert (await counter_store.read("a")).total == 10


async def test_rewriting_the_same_position_is_idempotent(counter_store):
    total = CountChanged("a", 10, 1, 5, 1, 0)
    for _ in range(3):
        await counter_store.write([total])
    assert await counter_store.read("a") == total


async def test_a_rebuild_epoch_outranks_every_earlier_sequence(counter_store):
    await counter_store.write([CountChanged("a", 99, 1, 500, 1, 0)])
    await counter_store.write([CountChanged("a", 97, 97, 1, 2, 0)])
    assert (await counter_store.read("a")).position() == (2, 1)


async def test_concurrent_out_of_order_writes_keep_the_highest(counter_store):
    totals = [CountChanged("hot", seq * 3, 3, seq, 1, 0) for seq in range(1, 41)]
    shuffled = totals[::2][::-1] + totals[1::2]
    await asyncio.gather(*(counter_store.write([t]) for t in shuffled))
    assert await counter_store.read("hot") == totals[-1]
