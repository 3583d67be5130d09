"""Per-clap accounting: every clap to every reader, against a brute-force count of the same pairs."""
from __future__ import annotations

import random
from collections import Counter

from loadtest.analysis import announcements_missed, per_clap_latency
from loadtest.clap_latency import (BIN_MS, EXACT, LOWER, METHODS, UPPER, ClapRecord, ClapTimes, FrameLog,
                                   pair_latencies)
from loadtest.clappers import Ledger, Session
from loadtest.stats import bucket_of

BIN_S = BIN_MS / 1000


def on_grid(index: int, fraction: float) -> float:
    """A time at ``fraction`` of bin ``index``: latencies then fall on bin centres, so the
    convolution's bins and a per-pair computation agree exactly."""
    return 1_000_000 * BIN_S + (index + fraction) * BIN_S


def simulate(seed: int, claps: int = 400, readers: int = 9, window_s: float = 0.1):
    """An ordered log, 100 ms windows with log-derived seqs and ``at``, readers that skip totals.

    Returns the clap records, the frame log, the readers' articles, and for every (clap, reader)
    the true latency to the first total that included it (or None).
    """
    rng = random.Random(seed)
    sent_bins = sorted(rng.randrange(0, 20_000) for _ in range(claps))  # 10 s of sends
    records, arrivals = [], []
    for bin_index in sent_bins:
        sent = on_grid(bin_index, 0.25)
        arrived = sent + rng.uniform(0.0002, 0.004)
        arrivals.append((arrived, sent))
    arrivals.sort()  # the log's order is the order claps reach the server
    offsets = {}
    for offset, (arrived, sent) in enumerate(arrivals):
        acked = arrived + rng.uniform(0.0005, 0.02)
        offsets[(sent, arrived)] = offset
        records.append(ClapRecord("a", sent, acked, offset + 1))
    ticks = []
    start = arrivals[0][0]
    tick = start + window_s
    while True:
        included = [a for a in arrivals if a[0] < tick]
        if included:
            newest = max(included)
            ticks.append((tick, len(included), int(newest[0] * 1000)))  # seq = newest offset + 1; at in ms
        if len(included) == len(arrivals):
            break
        tick += window_s
    frames = FrameLog()
    truth: dict[tuple[int, int], float | None] = {}
    conn_articles = {}
    for conn in range(readers):
        conn_articles[conn] = "a"
        got = []
        previous_seq = -1
        for index, (tick_s, seq, at_ms) in enumerate(ticks):
            last = index == len(ticks) - 1
            if seq == previous_seq or (not last and rng.random() < 0.3):
                continue  # conflated away for this reader (the newest always arrives)
            received = on_grid(int(tick_s / BIN_S) - 1_000_000 + rng.randrange(20, 600), 0.75)
            received = max(received, got[-1][2] + BIN_S if got else received)
            got.append((seq, at_ms, received))
            previous_seq = seq
        if conn == readers - 1:
            got = got[: len(got) // 2]  # this one stops receiving half way
        for seq, at_ms, received in got:
            frames.add(conn, seq, at_ms, received)
        for i, record in enumerate(records):
            first = next((r for s, _, r in got if s >= record.ack_seq), None)
            truth[(conn, i)] = None if first is None else first - record.sent_s
    return records, frames, conn_articles, truth


def brute_force(method: str, records, frames: FrameLog, conn_articles):
    """One pair at a time, straight from the definitions in loadtest.clap_latency."""
    histogram: Counter[int] = Counter()
    never = 0
    received_by: dict[int, list[tuple[int, int, float]]] = {c: [] for c in conn_articles}
    for conn, seq, at, received in zip(frames.conn, frames.seq, frames.at, frames.received):
        received_by[conn].append((seq, at, received))
    for conn, got in received_by.items():
        for record in records:
            running_max, first = -1, None
            for seq, at, received in got:
                running_max = max(running_max, at)
                if ((method == EXACT and seq >= record.ack_seq)
                        or (method == UPPER and running_max > record.acked_s * 1000)
                        or (method == LOWER and running_max >= int(record.sent_s * 1000))):
                    first = received
                    break
            if first is None:
                never += 1
            else:
                histogram[bucket_of((first - record.sent_s) * 1e6)] += 1
    return dict(histogram), never


def test_every_clap_to_every_reader_matches_a_pair_by_pair_count() -> None:
    records, frames, conn_articles, _ = simulate(seed=3)
    result = pair_latencies(frames, conn_articles, {"a": ClapTimes(records)}, METHODS)
    assert set(result) == set(METHODS)
    for method in METHODS:
        histogram, never = brute_force(method, records, frames, conn_articles)
        assert result[method]["histogram"] == histogram, method
        assert result[method]["never"] == never
        assert result[method]["pairs"] == len(records) * len(conn_articles)


def test_the_exact_method_finds_the_first_total_that_includes_each_clap() -> None:
    records, frames, conn_articles, truth = simulate(seed=11)
    result = pair_latencies(frames, conn_articles, {"a": ClapTimes(records)}, [EXACT])[EXACT]
    expected: Counter[int] = Counter(bucket_of(v * 1e6) for v in truth.values() if v is not None)
    assert result["histogram"] == dict(expected)
    assert result["never"] == sum(1 for v in truth.values() if v is None) > 0  # the reader that stopped


def test_the_at_bounds_bracket_the_truth_pair_by_pair() -> None:
    records, frames, conn_articles, truth = simulate(seed=5)
    received_by: dict[int, list[tuple[int, int, float]]] = {c: [] for c in conn_articles}
    for conn, seq, at, received in zip(frames.conn, frames.seq, frames.at, frames.received):
        received_by[conn].append((seq, at, received))
    checked = tail = 0
    for (conn, i), true_latency in truth.items():
        if true_latency is None:
            continue
        record = records[i]
        lower = next(r for s, a, r in received_by[conn] if a >= int(record.sent_s * 1000)) - record.sent_s
        upper_at = next((r for s, a, r in received_by[conn] if a > record.acked_s * 1000), None)
        if upper_at is None:
            # No clap reached the server after this one was acked: the last claps of a run. The
            # upper bound calls them "never" rather than guess.
            assert record.acked_s * 1000 >= max(a for _, a, _ in received_by[conn])
            tail += 1
            continue
        assert lower <= true_latency <= upper_at - record.sent_s
        checked += 1
    assert checked > 1000 and tail < checked / 100


def test_the_exact_method_needs_a_seq_in_every_ack() -> None:
    records, frames, conn_articles, _ = simulate(seed=2, claps=50, readers=2)
    records[7] = ClapRecord("a", records[7].sent_s, records[7].acked_s, -1)  # an ack without seq
    result = pair_latencies(frames, conn_articles, {"a": ClapTimes(records)}, METHODS)
    assert set(result) == {UPPER, LOWER}


def test_readers_that_received_nothing_count_every_clap_as_never() -> None:
    records, frames, conn_articles, _ = simulate(seed=4, claps=30, readers=2)
    conn_articles[99] = "a"  # connected, never got a total
    result = pair_latencies(frames, conn_articles, {"a": ClapTimes(records)}, [EXACT])[EXACT]
    _, never_without = brute_force(EXACT, records, frames, {0: "a", 1: "a"})
    assert result["never"] == never_without + 30
    assert result["pairs"] == 3 * 30


def test_only_claps_sent_within_the_window_count() -> None:
    times = ClapTimes([ClapRecord("a", t, t + 0.01, i + 1) for i, t in enumerate([9.5, 10.0, 10.5, 11.0])])
    inside = times.within(10.0, 11.0)
    assert inside.sent_s.tolist() == [10.0, 10.5] and inside.ack_seq.tolist() == [2, 3]


def test_the_ledger_keeps_every_acked_clap_with_its_seq() -> None:
    ledger = Ledger()
    session = Session(object(), ledger, "s")  # type: ignore[arg-type]
    session.pending["x"] = type("Sent", (), {"article": "a", "count": 1, "at": 100.0})()
    session.pending["y"] = type("Sent", (), {"article": "a", "count": 1, "at": 101.0})()
    session.pending["z"] = type("Sent", (), {"article": "a", "count": 1, "at": 102.0})()
    session._on_message({"type": "ack", "id": "x", "seq": 41})
    session._on_message({"type": "ack", "id": "y"})  # a gateway whose acks carry no seq yet
    session._on_message({"type": "error", "id": "z", "code": "rate_limited"})
    assert [(a, s, seq) for a, s, _, seq in ledger.claps] == [("a", 100.0, 41), ("a", 101.0, -1)]
    other = Ledger()
    other.claps.append(("a", 150.0, 150.01, 77))
    ledger.merge(other)
    payload = ledger.claps_for_readers(100.5, 200.0)
    assert payload["window"] == (100.5, 200.0)
    assert [row[0] for row in payload["by_article"]["a"]] == [101.0, 150.0]


def test_per_clap_percentiles_merge_the_processes() -> None:
    histogram = {bucket_of(100_000): 90, bucket_of(300_000): 10}
    results = [{"per_clap": {EXACT: {"histogram": histogram, "pairs": 100, "never": 0}}},
               {"per_clap": {EXACT: {"histogram": histogram, "pairs": 101, "never": 1}}}]
    merged = per_clap_latency(results)[EXACT]
    assert (merged["count"], merged["pairs"], merged["never"]) == (200, 201, 1)
    assert abs(merged["p50"] - 100) / 100 < 0.025 and abs(merged["p99"] - 300) / 300 < 0.025


def test_missed_announcements_count_what_others_got_not_seq_gaps() -> None:
    # Log-derived seqs skip numbers by design: 100, 200, 300 are three announcements, no gap.
    results = [
        {"announced": {"a": [100, 200, 300, 400]}, "reader_seq_spans": [("a", 100, 400, 4), ("a", 100, 400, 3)]},
        {"announced": {"a": [100, 300, 400, 500]}, "reader_seq_spans": [("a", 300, 500, 3)]},
    ]
    missed = announcements_missed(results)
    assert missed is not None
    assert (missed["announcements"], missed["missed"], missed["readers_missing_some"]) == (5, 1, 1)


async def test_the_room_cadence_is_read_from_a_gateways_metrics() -> None:
    import asyncio

    from loadtest.plans import Target
    from loadtest.scenarios import gateway_room_metrics

    body = (b'# HELP gateway_room_updates_per_second x\ngateway_room_updates_per_second{article="a-0"} 6.5\n'
            b'gateway_room_pass_seconds_count 40.0\ngateway_room_pass_seconds_sum 6.0\ngateway_rooms 1.0\n')

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        found = await gateway_room_metrics([Target("127.0.0.1", port), Target("127.0.0.1", 1)])  # 2nd: nobody
    assert found == {"gateway-0": {'gateway_room_updates_per_second{article="a-0"}': 6.5,
                                   "gateway_room_pass_seconds_count": 40.0, "gateway_room_pass_seconds_sum": 6.0}}
