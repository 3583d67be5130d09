"""The reader path of the protocol against a live embedded gateway: acks with positions, "mine"."""
from __future__ import annotations

from tests.support.clients import Reader, new_token


async def test_an_ack_carries_the_log_position_that_totals_from_then_on_include(embedded):
    reader = await Reader.open(embedded.ws_url)
    await reader.join("slow-readers")
    clapper = await Reader.open(embedded.ws_url, new_token(embedded.base_url))
    seqs = []
    for batch in range(4):
        await clapper.clap("slow-readers", 3, f"b{batch}")
        assert await clapper.wait_for(lambda r: f"b{batch}" in r.acks, 10)
        # Another article's clap in between: seqs are log positions, so they have gaps.
        await clapper.clap("why-logs-win", 1, f"x{batch}")
        assert await clapper.wait_for(lambda r: f"x{batch}" in r.acks, 10)
        seqs.append(clapper.ack_seqs[f"b{batch}"])
        # The total that counts this batch is at exactly its ack's seq: it is the newest event.
        assert await reader.wait_for(lambda r: r.totals.get("slow-readers") == 3 * (batch + 1), 10)
        assert reader.positions["slow-readers"][1] == seqs[-1]
    assert [b - a for a, b in zip(seqs, seqs[1:])] == [2, 2, 2]
    assert [clapper.ack_seqs[f"x{batch}"] for batch in range(4)] == [seq + 1 for seq in seqs]
    assert reader.drops == 0
    await reader.close()
    await clapper.close()


async def test_the_join_answer_carries_the_readers_own_counted_claps(embedded):
    token, other_token = new_token(embedded.base_url), new_token(embedded.base_url)
    clapper = await Reader.open(embedded.ws_url, token)
    other = await Reader.open(embedded.ws_url, other_token)
    await clapper.clap("hello-claps", 5, "m1")
    await clapper.clap("hello-claps", 7, "m2")
    await clapper.clap("hello-claps", 5, "m1")  # a retry of m1: counted once
    await other.clap("hello-claps", 4, "o1")
    assert await clapper.wait_for(lambda r: r.acks == {"m1", "m2"}, 10)
    watcher = await Reader.open(embedded.ws_url)  # no identity: no "mine"
    await watcher.join("hello-claps")
    assert await watcher.wait_for(lambda r: r.totals.get("hello-claps") == 16, 10)

    again = await Reader.open(embedded.ws_url, token)  # another device of the same reader
    await again.join("hello-claps")
    await again.join("why-logs-win")
    assert await again.wait_for(lambda r: r.mine == {"hello-claps": 12, "why-logs-win": 0}, 10)
    await other.join("hello-claps")
    assert await other.wait_for(lambda r: r.mine.get("hello-claps") == 4, 10)
    stranger = await Reader.open(embedded.ws_url, new_token(embedded.base_url))
    await stranger.join("hello-claps")
    assert await stranger.wait_for(lambda r: r.mine.get("hello-claps") == 0, 10)
    assert watcher.mine == {}

    # Past the cap: acked, but "mine" stops at 50 as the total does.
    await clapper.clap("hello-claps", 45, "m3")
    assert await watcher.wait_for(lambda r: r.totals.get("hello-claps") == 54, 10)
    latest = await Reader.open(embedded.ws_url, token)
    await latest.join("hello-claps")
    assert await latest.wait_for(lambda r: r.mine.get("hello-claps") == 50, 10)
    for client in (clapper, other, watcher, again, stranger, latest):
        await client.close()
