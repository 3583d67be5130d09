"""The counter store's read_mine: a user's counted claps on an article, for "you: n/50".

The rows are written the way each deployment fills them: the embedded processor commits its
per-user state to SQLite; in the distributed one the projector writes ``user_totals`` rows.
"""
import uuid

from core.ledger import UserClaps
from core.processing import user_key
from embedded.sqlite_store import SqliteCounterStore
from projector.cassandra_store import USER_ROWS_PER_BATCH, CassandraCounterStore
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


async def test_many_readers_of_many_articles_in_one_write(counter_store):
    """More rows of one article than one Cassandra batch holds, beside rows of other articles: every
    reader's own row, whatever batch it went in."""
    readers = {(article, f"u{n}"): (n % 50) + 1 for article in ("many", "few", "one") for n in range(
        {"many": 97, "few": 3, "one": 1}[article])}
    if isinstance(counter_store, SqliteCounterStore):
        await counter_store.commit({user_key(a, u): UserClaps(t, 7, (("c1", 7, t),)) for (a, u), t in readers.items()},
                                   {}, 7, 1, [])
    else:
        await counter_store.write_user_totals([UserTotal(a, u, t, 1, 7) for (a, u), t in readers.items()])
    assert {key: await counter_store.read_mine(*key) for key in readers} == readers


async def test_the_projectors_rows_keep_the_newest_position_whatever_order_batches_arrive_in(real_services):
    """Cassandra only: SQLite's rows are the embedded processor's own state, written in its order.
    A redelivered older batch (after a crash) must not overwrite newer rows, in batches of one
    article's rows or alone."""
    store = CassandraCounterStore(["127.0.0.1"], 9042, f"contract_{uuid.uuid4().hex[:8]}")
    await store.start()
    try:
        users = [f"u{n}" for n in range(USER_ROWS_PER_BATCH + 20)]  # a full batch and a partial one
        await store.write_user_totals([UserTotal("ordered", user, 10, 1, 20) for user in users])
        await store.write_user_totals([UserTotal("ordered", user, 5, 1, 19) for user in users])
        await store.write_user_totals([UserTotal("ordered", "u0", 4, 1, 3)])  # alone, older still
        assert {user: await store.read_mine("ordered", user) for user in users} == {user: 10 for user in users}
    finally:
        await store.close()
