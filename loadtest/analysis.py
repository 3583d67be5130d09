"""Turning what the reader processes and clappers sent back into the numbers of a phase."""
from __future__ import annotations

import bisect
import statistics
from collections import Counter
from typing import Any

from loadtest.clappers import Ledger
from loadtest.procmon import ProcMonitor
from loadtest.stats import Histogram, add_series, merge_histograms, percentiles_ms, quantiles, seconds_within


def per_reader_rates(results: list[dict[str, Any]], start: str = "start", end: str = "end") -> list[float]:
    """Updates per second of every reader between two marks (each process timed its own marks)."""
    rates: list[float] = []
    for result in results:
        marks = {name: (at, counts) for name, at, counts in result["marks"]}
        if start not in marks or end not in marks:
            continue
        (t0, before), (t1, after) = marks[start], marks[end]
        span = t1 - t0
        if span <= 0:
            continue
        rates.extend((a - b) / span for a, b in zip(after, before))
    return rates


def per_second_series(results: list[dict[str, Any]], key: str) -> dict[int, int]:
    series: dict[int, int] = {}
    for result in results:
        add_series(series, result[key])
    return series


def latency_by_second(results: list[dict[str, Any]]) -> dict[int, Histogram]:
    by_second: dict[int, Histogram] = {}
    for result in results:
        for second, histogram in result["latency"].items():
            by_second[second] = merge_histograms([by_second.get(second, {}), histogram])
    return by_second


def throughput(series: dict[int, int], start: float, end: float) -> dict[str, Any]:
    """Per-second delivered counts inside a window: median first, the machine is noisy."""
    values = seconds_within(series, start, end)
    if not values:
        return {"seconds": 0, "median_per_s": None, "mean_per_s": None}
    return {
        "seconds": len(values),
        "median_per_s": statistics.median(values),
        "mean_per_s": round(statistics.fmean(values), 1),
        **{k: v for k, v in quantiles(values, (5, 95)).items()},
    }


def fanout_spreads(results: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Per update first to last arrival over all readers (ms): how long one fan-out took."""
    merged: dict[bytes, list[float]] = {}
    for result in results:
        for key, (first, last, readers) in result.get("spans", {}).items():
            span = merged.get(key)
            if span is None:
                merged[key] = [first, last, readers]
            else:
                span[0], span[1], span[2] = min(span[0], first), max(span[1], last), span[2] + readers
    inside = [s for s in merged.values() if start <= s[0] <= end]
    if not inside:
        return {"updates": 0}
    most = max(s[2] for s in inside)
    # Only updates that reached (nearly) every reader: a partial one would understate the spread.
    full = [(s[1] - s[0]) * 1000 for s in inside if s[2] >= 0.99 * most]
    return {"updates": len(inside), "readers_per_update_max": most, "complete_updates": len(full),
            **{f"{k}_ms": v for k, v in quantiles(full, (50, 95, 99, 100)).items()}}


def per_clap_latency(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method (``loadtest.clap_latency``): percentiles over every (clap, reader) pair of all processes."""
    methods: dict[str, dict[str, Any]] = {}
    for result in results:
        for method, part in (result.get("per_clap") or {}).items():
            into = methods.setdefault(method, {"histogram": {}, "pairs": 0, "never": 0})
            into["histogram"] = merge_histograms([into["histogram"], part["histogram"]])
            into["pairs"] += part["pairs"]
            into["never"] += part["never"]
    return {method: {**percentiles_ms(m["histogram"], (50, 95, 99, 99.9)), "pairs": m["pairs"], "never": m["never"],
                     "_histogram": m["histogram"]} for method, m in methods.items()}


def announcements_missed(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Totals announced (received by at least one reader) that a reader did not get, between its
    first and last: conflation for a slow reader, or a pass that never reached it. Positions may
    skip numbers (log-derived seqs), so this counts against what was announced, not seq gaps."""
    if not any("announced" in r for r in results):
        return None
    announced: dict[str, set[int]] = {}
    for result in results:
        for article, seqs in result.get("announced", {}).items():
            announced.setdefault(article, set()).update(seqs)
    ordered = {article: sorted(seqs) for article, seqs in announced.items()}
    missed_per_reader: list[int] = []
    for result in results:
        for article, first, last, received in result.get("reader_seq_spans", []):
            seqs = ordered[article]
            between = bisect.bisect_right(seqs, last) - bisect.bisect_right(seqs, first)
            missed_per_reader.append(between - (received - 1))
    return {"announcements": sum(len(s) for s in ordered.values()), "missed": sum(missed_per_reader),
            "readers_missing_some": sum(1 for m in missed_per_reader if m > 0),
            "frames_not_logged": sum(r.get("frames_not_logged", 0) for r in results)}


def summarize_readers(results: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result["errors"])
    frames = per_second_series(results, "frames")
    updates = per_second_series(results, "updates")
    by_second = latency_by_second(results)
    rates = per_reader_rates(results)
    sums = {key: sum(r[key] for r in results) for key in (
        "attempted", "connected", "failed", "closed_unexpectedly", "snapshots", "skipped", "duplicates",
        "out_of_order", "misrouted", "other_messages", "readers_with_skips")}
    return {
        **sums,
        "processes": len(results),
        "errors": dict(errors.most_common(20)),
        "frames_per_second": throughput(frames, start, end),
        "updates_per_second": throughput(updates, start, end),
        "latency_ms": percentiles_ms(merge_histograms(by_second.values())),
        "fanout_spread": fanout_spreads(results, start, end),
        "connect_latency_ms": percentiles_ms(merge_histograms(r["connect_latency"] for r in results)),
        "per_reader_updates_per_s": {**quantiles(rates), "readers": len(rates)},
        "reader_cpu_s": round(sum(r["cpu_s"] for r in results), 2),
        "reader_max_rss_mb": [round(r["max_rss_kb"] / 1024, 1) for r in results],
        "series": {
            "frames": sorted(frames.items()),
            "updates": sorted(updates.items()),
            "latency_p50_p99": [
                (s, percentiles_ms(h, (50, 99))) for s, h in sorted(by_second.items())
            ],
        },
        "per_clap_latency_ms": per_clap_latency(results),
        "announcements_missed": announcements_missed(results),
        "_latency_histogram": merge_histograms(by_second.values()),
        "_rates": rates,
    }


def summarize_ledger(ledger: Ledger, start: float, end: float) -> dict[str, Any]:
    return {
        "sessions": ledger.sessions,
        "session_errors": dict(ledger.session_errors),
        "clap_messages": ledger.messages,
        "taps": sum(ledger.tapped.values()),
        "taps_not_made_up": round(ledger.taps_not_made_up),
        "longest_gap_between_looks_s": round(ledger.longest_gap_s, 3),
        "claps_acked": sum(ledger.acked.values()),
        "claps_refused": dict(ledger.refused),
        "claps_unanswered": sum(ledger.unknown.values()),
        "taps_per_second": throughput(ledger.taps_per_second, start, end),
        "acked_claps_per_second": throughput(ledger.acks_per_second, start, end),
        "ack_latency_ms": percentiles_ms(ledger.ack_latency),
        "session_post_ms": percentiles_ms(ledger.session_post_latency),
        "session_connect_ms": percentiles_ms(ledger.session_connect_latency),
        "series": {"taps": sorted(ledger.taps_per_second.items()), "acks": sorted(ledger.acks_per_second.items())},
    }


def settled_at(polls: list[tuple[float, Any, bool]]) -> float | None:
    """When the totals reached their final values: the time of the first poll from which every
    poll saw the last poll's totals with no reader behind. ``polls``: (time the poll's reads had
    all returned, what it read, whether a reader was behind), in order. Totals only grow, so the
    first poll that sees the final ones is when they arrived, to within one poll."""
    if not polls or polls[-1][2]:
        return None
    final = polls[-1][1]
    seen = polls[-1][0]
    for at, totals, behind in reversed(polls):
        if totals != final or behind:
            break
        seen = at
    return seen


def acks_allow(ledger: Ledger, article: str, gained: int) -> bool:
    """Whether an article's gain is what its acks say it must be: at least the acked claps, at
    most those plus the unanswered ones (the 50 cap per user applied to both)."""
    return ledger.acked_capped[article] <= gained <= ledger.upper_capped[article]


def totals_agree(ledger: Ledger, per_target: dict[tuple[int, str], int], initial: dict[str, int]) -> bool:
    """Whether every total read (per target, per article) is what the acks say it must be, as
    ``check_totals`` judges a final one: a pipeline that stalls shows totals that hold still
    without having arrived, so holding still alone does not make them settled."""
    return all(total >= 0 and acks_allow(ledger, article, total - initial.get(article, 0))
               for (_, article), total in per_target.items())


def check_totals(ledger: Ledger, finals: dict[str, int], initial: dict[str, int]) -> dict[str, Any]:
    """Compare each article's final total with what the acks say it must be (50 cap per user)."""
    exact = within = outside = 0
    examples: list[dict[str, Any]] = []
    for article in sorted(set(ledger.tapped) | set(finals)):
        gained = finals.get(article, 0) - initial.get(article, 0)
        low, high = ledger.acked_capped[article], ledger.upper_capped[article]
        if gained == low == high:
            exact += 1
        elif acks_allow(ledger, article, gained):
            within += 1
        else:
            outside += 1
            if len(examples) < 10:
                examples.append({"article": article, "gained": gained, "acked_capped": low, "upper": high})
    return {"articles": exact + within + outside, "exact": exact, "within_unanswered": within,
            "mismatched": outside, "examples": examples}


def server_cores(phase: dict[str, Any], kind: str = "cpu_cores_during_run") -> float:
    """A phase's server processes' CPU in cores, added up: all of it, or with
    ``kind="cpu_kernel_cores_during_run"`` the kernel's part (as ``gateway_resources`` stores them)."""
    return sum(res.get(kind) or 0.0 for res in phase.get("servers", {}).values())


def gateway_resources(monitor: ProcMonitor, label: str, before: float, connected: float,
                      start: float, end: float) -> dict[str, Any]:
    """CPU during the measured window; RSS growth per connection from idle to all connected."""
    idle = monitor.rss_at(label, before)
    full = monitor.rss_at(label, connected)
    samples = [s for s in monitor.series[label].samples if start <= s.at <= end]
    out: dict[str, Any] = {
        "pid": monitor.series[label].pid,
        "cpu_cores_during_run": _round(monitor.cpu_share(label, start, end)),
        "cpu_kernel_cores_during_run": _round(monitor.kernel_share(label, start, end)),
        "main_thread_waiting_for_cpu_share": _round(monitor.wait_share(label, start, end)),
        "rss_mb_idle": _mb(idle.rss_kb if idle else None),
        "rss_mb_connected": _mb(full.rss_kb if full else None),
        "rss_mb_peak_during_run": _mb(max((s.rss_kb for s in samples), default=None)),
        "fds_idle": idle.fds if idle else None,
        "fds_connected": full.fds if full else None,
    }
    if idle and full and full.fds > idle.fds:
        out["rss_kb_per_connection"] = round((full.rss_kb - idle.rss_kb) / (full.fds - idle.fds), 2)
    return out


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
