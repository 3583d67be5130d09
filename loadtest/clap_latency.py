"""Per-clap latency: from each clap's send to each reader's first total that includes it.

Every clap to every reader: with 1,000 claps/s and 10,000 readers that is 10^7 pairs a second,
so nothing here loops in Python per pair. Each reader process logs the totals its readers
receive (``FrameLog``: reader, seq, at, receive time); after the run the orchestrator sends it
the clappers' claps (``ClapTimes``) and it turns every (clap, reader) pair into a latency bucket
with numpy: per reader, one ``searchsorted`` of all claps into the totals it received.

Which total first includes a clap, by the best evidence the server gives:

``ack_seq`` (exact)
    The ack carries ``seq``: the clap is in every total of its article at that ``seq`` or above
    (docs/PROTOCOL.md). The first received total with ``seq >= ack seq`` includes it.
``at_after_ack`` (never early)
    Without a ``seq`` in the ack: a total's ``at`` is when its newest clap reached the server.
    A clap that reached the server after this one was acked was appended to the ordered log
    after it, so a total with ``at`` later than this clap's ack includes this clap. It may be a
    total later than the first one that did (the clapper's ack time is late, never early), so
    this latency is an upper bound. The last claps of a run, that no later clap followed, have
    no such total: they are counted as "never".
``at_after_send`` (never late)
    Any total that includes the clap has ``at`` at or after the clap reached the server, hence
    at or after its send. The first such total may not include it yet: a lower bound.

The two ``at`` bounds bracket the truth; where the ack carries ``seq`` all three are computed, and
the gap between them shows how good the bracket is.
"""
from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.stats import Histogram, bucket_of

EXACT, UPPER, LOWER = "ack_seq", "at_after_ack", "at_after_send"
METHODS = (EXACT, UPPER, LOWER)


@dataclass(frozen=True)
class ClapRecord:
    """One acked clap message as its clapper saw it (Unix seconds; ``ack_seq`` -1: not given)."""

    article: str
    sent_s: float
    acked_s: float
    ack_seq: int = -1


class ClapTimes:
    """The acked claps of one article as numpy arrays, sorted by send time."""

    def __init__(self, records: Iterable[ClapRecord]) -> None:
        rows = sorted(((r.sent_s, r.acked_s, r.ack_seq) for r in records))
        self.sent_s = np.array([r[0] for r in rows], dtype=np.float64)
        self.acked_s = np.array([r[1] for r in rows], dtype=np.float64)
        self.ack_seq = np.array([r[2] for r in rows], dtype=np.int64)
        # Thresholds in the units of the frames' ``at`` (integer ms).
        self.sent_ms_floor = np.floor(self.sent_s * 1000.0)
        self.acked_ms = self.acked_s * 1000.0

    def __len__(self) -> int:
        return len(self.sent_s)

    @property
    def every_ack_has_seq(self) -> bool:
        return len(self) > 0 and bool((self.ack_seq >= 0).all())

    def within(self, start: float, end: float) -> ClapTimes:
        keep = (self.sent_s >= start) & (self.sent_s < end)
        out = object.__new__(ClapTimes)
        for name in ("sent_s", "acked_s", "ack_seq", "sent_ms_floor", "acked_ms"):
            setattr(out, name, np.ascontiguousarray(getattr(self, name)[keep]))
        return out


def claps_by_article(records: Iterable[ClapRecord]) -> dict[str, list[ClapRecord]]:
    grouped: dict[str, list[ClapRecord]] = {}
    for record in records:
        grouped.setdefault(record.article, []).append(record)
    return grouped


class FrameLog:
    """Every live total each reader of one process received, in arrival order (4 appends a frame)."""

    __slots__ = ("conn", "seq", "at", "received")

    def __init__(self) -> None:
        self.conn = array("i")
        self.seq = array("q")
        self.at = array("q")
        self.received = array("d")

    def add(self, conn: int, seq: int, at_ms: int, received_s: float) -> None:
        self.conn.append(conn)
        self.seq.append(seq)
        self.at.append(at_ms)
        self.received.append(received_s)

    def __len__(self) -> int:
        return len(self.conn)

    def per_conn(self) -> Iterator[tuple[int, Any, Any, Any]]:
        """(conn, seqs, ats, receive times) per reader, each in arrival order."""
        if not len(self.conn):
            return
        conn = np.frombuffer(self.conn, dtype=np.int32)
        order = np.argsort(conn, kind="stable")
        conn_sorted = conn[order]
        seq = np.frombuffer(self.seq, dtype=np.int64)[order]
        at = np.frombuffer(self.at, dtype=np.int64)[order]
        received = np.frombuffer(self.received, dtype=np.float64)[order]
        bounds = np.flatnonzero(np.diff(conn_sorted)) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [len(conn_sorted)]))
        for s, e in zip(starts.tolist(), ends.tolist()):
            yield int(conn_sorted[s]), seq[s:e], at[s:e], received[s:e]


BIN_MS = 0.5  # pairs are counted in linear bins of this width, then folded into the log buckets


def _thresholds(claps: ClapTimes, method: str) -> Any:
    if method == EXACT:
        return claps.ack_seq.astype(np.float64)
    return claps.acked_ms if method == UPPER else claps.sent_ms_floor


def _frame_keys(method: str, seqs: Any, at_so_far: Any) -> Any:
    return seqs.astype(np.float64) if method == EXACT else at_so_far.astype(np.float64)


def _first_including(method: str, thresholds_sorted: Any, previous: Any, key: Any) -> tuple[Any, Any]:
    """The range [lo, hi) of claps (sorted by threshold) that a frame is the first to include.

    ``ack_seq``: previous < ack seq <= seq. ``at_after_ack``: previous at <= ack ms < at.
    ``at_after_send``: previous at < send ms <= at.
    """
    side = "left" if method == UPPER else "right"
    return np.searchsorted(thresholds_sorted, previous, side=side), np.searchsorted(thresholds_sorted, key, side=side)


def pair_latencies(frames: FrameLog, conn_articles: dict[int, str], claps: dict[str, ClapTimes],
                   methods: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per method: the latency histogram of every (clap, reader) pair of this process.

    ``conn_articles`` maps every reader to count (also those that received nothing: all their
    pairs are "never") to its article; ``claps`` holds only the claps to account for (e.g. those
    sent within the measured window). A method that needs an ack ``seq`` is skipped unless every
    clap has one.

    Readers that received the same two consecutive totals (most of them) are first to see the
    same claps, so pairs are counted per group of (previous total, total): the latencies of a
    group are its receive times minus its claps' send times, a convolution of two histograms
    in ``BIN_MS`` bins (±1 bin), instead of one subtraction per pair.
    """
    claps = {a: c for a, c in claps.items() if len(c)}
    methods = [m for m in methods if m != EXACT or all(c.every_ack_has_seq for c in claps.values())]
    out: dict[str, dict[str, Any]] = {}
    per_conn = list(frames.per_conn())
    for method in methods:
        linear = np.zeros(0, dtype=np.int64)
        never = 0
        pairs = 0
        for article, clap_times in claps.items():
            thresholds = _thresholds(clap_times, method)
            order = np.argsort(thresholds, kind="stable")
            thresholds_sorted = thresholds[order]
            sent_bins = np.floor(clap_times.sent_s[order] * 1000.0 / BIN_MS).astype(np.int64)
            conns = [c for c in conn_articles if conn_articles[c] == article]
            mine = [(seqs, ats, received) for conn, seqs, ats, received in per_conn if conn_articles.get(conn) == article]
            pairs += len(conns) * len(clap_times)
            never += (len(conns) - len(mine)) * len(clap_times)  # readers that received no total at all
            if not mine:
                continue
            previous, keys, received = [], [], []
            for seqs, ats, got_at in mine:
                key = _frame_keys(method, seqs, np.maximum.accumulate(ats))
                previous.append(np.concatenate(([-np.inf], key[:-1])))
                keys.append(key)
                received.append(got_at)
                last = key[-1]
                never += len(thresholds_sorted) - int(_first_including(method, thresholds_sorted, -np.inf, last)[1])
            lo, hi = _first_including(method, thresholds_sorted, np.concatenate(previous), np.concatenate(keys))
            received_bins = np.floor(np.concatenate(received) * 1000.0 / BIN_MS).astype(np.int64)
            useful = hi > lo
            lo, hi, received_bins = lo[useful], hi[useful], received_bins[useful]
            group_key = lo * (len(thresholds_sorted) + 1) + hi
            by_group = np.argsort(group_key, kind="stable")
            group_key, received_bins = group_key[by_group], received_bins[by_group]
            cuts = np.flatnonzero(np.diff(group_key)) + 1
            for start, end in zip(np.concatenate(([0], cuts)).tolist(), np.concatenate((cuts, [len(group_key)])).tolist()):
                g_lo, g_hi = divmod(int(group_key[start]), len(thresholds_sorted) + 1)
                r = received_bins[start:end]
                s = sent_bins[g_lo:g_hi]
                r_min, s_min, s_max = int(r.min()), int(s.min()), int(s.max())
                r_hist = np.bincount(r - r_min)
                s_hist_reversed = np.bincount(s_max - s)  # index m <-> send bin s_max - m
                latency = np.convolve(r_hist, s_hist_reversed)  # index q <-> latency bin r_min - s_max + q
                offset = r_min - s_max
                if offset < 0:  # a receive before a send can only be binning: call it zero
                    latency = np.concatenate(([latency[: -offset + 1].sum()], latency[-offset + 1 :]))
                    offset = 0
                if len(linear) < offset + len(latency):
                    linear = np.concatenate((linear, np.zeros(offset + len(latency) - len(linear), dtype=np.int64)))
                linear[offset : offset + len(latency)] += latency
        histogram: Histogram = {}
        for index in np.flatnonzero(linear).tolist():
            bucket = bucket_of((index + 0.5) * BIN_MS * 1000.0)
            histogram[bucket] = histogram.get(bucket, 0) + int(linear[index])
        out[method] = {"histogram": histogram, "pairs": pairs, "never": never}
    return out
