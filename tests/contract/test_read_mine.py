"""The counter store's read_mine: a user's counted claps on an article, for "you: n/50".

The rows are written the way each deployment fills them: the embedded processor commits its
per-user state to SQLite; in the distributed one the projector writes ``user_totals`` rows.
"""
from core.ledger import UserClaps
from core.processing import user_key
from embedded.sqlite_store import SqliteCounterStore
from projector.service import UserTotal


async def record_mine(store, article: str, user: str, total: int) -> None:
    if isinstance(store, SqliteCounterStore):
        await store.commit({user_key(article, user): UserClaps(total, 7, (("c1", 7, total),))}, {}, 7, 1, [])
    else:
        await store.write_user_totals([UserTotal(article, user, total, 1, 7)])


async def test_nobody_has_clapped_reads_zero(counter_store):
    assert await counter_store.read_mine("never-clapped", "u1") == 0


async def test_a_users_counted_claps_on_one_article(counter_store):
    await record_mine(counter_store, "a", "u1", 7)
    await record_mine(counter_store, "a", "u2", 50)
    await record_mine(counter_store, "b", "u1", 3)
    assert await counter_store.read_mine("a", "u1") == 7
    assert await counter_store.read_mine("a", "u2") == 50
    assert await counter_store.read_mine("b", "u1") == 3
    assert await counter_store.read_mine("b", "u2") == 0
    assert await counter_store.read_mine("c", "u1") == 0
