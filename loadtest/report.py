"""result.json, PNG plots, report.html and the printed summary of one run."""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402
import orjson  # noqa: E402

from loadtest.stats import bucket_value_us  # noqa: E402


def write_all(result: dict[str, Any], private: dict[str, Any], out_dir: Path) -> Path:
    (out_dir / "result.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    )
    images = [name for name in (
        plot_latency(private, out_dir),
        plot_per_clap_latency(private, out_dir),
        plot_throughput(result, out_dir),
        plot_cpu(result, out_dir),
        plot_memory(result, out_dir),
        plot_reader_rates(private, out_dir),
    ) if name]
    page = out_dir / "report.html"
    page.write_text(render_html(result, images))
    return page


# -- plots ---------------------------------------------------------------------------------------


def plot_latency(private: dict[str, Any], out_dir: Path) -> str | None:
    phases = {label: p["latency"] for label, p in private.items() if p.get("latency")}
    if not phases:
        return None
    fig, (hist_ax, cdf_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, histogram in phases.items():
        buckets = sorted(histogram)
        total = sum(histogram.values())
        ms = [bucket_value_us(b) / 1000 for b in buckets]
        share = [histogram[b] / total for b in buckets]
        hist_ax.step(ms, share, where="mid", label=f"{label} ({total:,} updates)")
        running, cdf = 0, []
        for b in buckets:
            running += histogram[b]
            cdf.append(running / total)
        cdf_ax.plot(ms, cdf, label=label)
    for ax in (hist_ax, cdf_ax):
        ax.set_xscale("log")
        ax.set_xlabel("clap-to-reader latency, ms (receive time - at)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    hist_ax.set_ylabel("share of updates per bucket (±2.2%)")
    cdf_ax.set_ylabel("cumulative share")
    cdf_ax.axhline(0.99, color="grey", linestyle=":")
    fig.tight_layout()
    fig.savefig(out_dir / "latency.png", dpi=90)
    plt.close(fig)
    return "latency.png"


def plot_per_clap_latency(private: dict[str, Any], out_dir: Path) -> str | None:
    """Cumulative share of (clap, reader) pairs by latency, per phase and method."""
    curves = [(f"{label} {method}", histogram) for label, p in private.items()
              for method, histogram in (p.get("per_clap") or {}).items() if histogram]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, histogram in curves:
        buckets = sorted(histogram)
        total = sum(histogram.values())
        running, cdf = 0, []
        for b in buckets:
            running += histogram[b]
            cdf.append(running / total)
        ax.plot([bucket_value_us(b) / 1000 for b in buckets], cdf, label=f"{name} ({total:,} pairs)")
    ax.set_xscale("log")
    ax.set_xlabel("per clap: its send to a reader's first total that includes it, ms")
    ax.set_ylabel("cumulative share of (clap, reader) pairs")
    ax.axhline(0.99, color="grey", linestyle=":")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "per_clap_latency.png", dpi=90)
    plt.close(fig)
    return "per_clap_latency.png"


def plot_throughput(result: dict[str, Any], out_dir: Path) -> str | None:
    phases = result["phases"]
    if not phases:
        return None
    fig, (frames_ax, claps_ax) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for label, phase in phases.items():
        origin = phase["window"]["start"]
        if "readers" in phase:
            seconds, counts = _dense(phase["readers"]["series"]["frames"])
            frames_ax.plot([s - origin for s in seconds], counts, marker=".", label=f"{label}: frames/s at readers")
        if "clappers" in phase:
            for key, name in (("taps", "taps/s sent"), ("acks", "claps/s acked")):
                seconds, counts = _dense(phase["clappers"]["series"][key])
                claps_ax.plot([s - origin for s in seconds], counts, marker=".", label=f"{label}: {name}")
    for ax in (frames_ax, claps_ax):
        ax.axvline(0, color="grey", linestyle=":")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    frames_ax.set_ylabel("delivered frames per second (all readers)")
    claps_ax.set_ylabel("claps per second")
    claps_ax.set_xlabel("seconds since the start mark of each phase")
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=90)
    plt.close(fig)
    return "throughput.png"


def _process_series(result: dict[str, Any]) -> dict[str, list[list[float]]]:
    return {label: p["samples"] for label, p in result.get("monitor", {}).get("processes", {}).items()}


def _dense(series: list[list[int]]) -> tuple[list[int], list[int]]:
    """Per-second counts with the silent seconds as zeros, so a plot shows gaps as drops."""
    if not series:
        return [], []
    counts = dict((s, c) for s, c in series)
    seconds = list(range(min(counts), max(counts) + 1))
    return seconds, [counts.get(s, 0) for s in seconds]


def plot_cpu(result: dict[str, Any], out_dir: Path) -> str | None:
    series = _process_series(result)
    if not series:
        return None
    origin = result["started_at"]
    fig, ax = plt.subplots(figsize=(11, 4))
    groups: dict[str, dict[float, float]] = {}
    for label, samples in series.items():
        # Reader and clapper processes are summed per kind; servers are drawn one by one.
        group = "reader processes" if "-readers-" in label else "clapper processes" if label.startswith("clappers-") else label
        points = groups.setdefault(group, {})
        for a, b in zip(samples, samples[1:]):
            if b[0] > a[0]:
                t = round(((a[0] + b[0]) / 2 - origin) * 2) / 2
                points[t] = points.get(t, 0.0) + (b[1] - a[1]) / (b[0] - a[0])
    for group, points in groups.items():
        times = sorted(points)
        ax.plot(times, [points[t] for t in times], label=f"{group} CPU (cores)")
    machine = result.get("monitor", {}).get("machine_busy", [])
    cores = result.get("monitor", {}).get("cores", 2)
    for key, style in (("busy", ":"), ("softirq", "--")):
        if machine:
            ax.plot([t - origin for t, _ in machine], [s[key] * cores for _, s in machine], color="black",
                    linestyle=style, label=f"whole machine {key} (cores of {cores})")
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("cores")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "cpu.png", dpi=90)
    plt.close(fig)
    return "cpu.png"


_SERVER_LABEL = re.compile(r"^(gateway-\d+|baseline)$")


def plot_memory(result: dict[str, Any], out_dir: Path) -> str | None:
    series = {k: v for k, v in _process_series(result).items() if _SERVER_LABEL.match(k)}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, samples in series.items():
        # Only the ramp up: after the run the sockets close but freed memory is not returned.
        peak = max(range(len(samples)), key=lambda i: samples[i][3]) if samples else 0
        ramp = samples[: peak + 1]
        ax.scatter([s[3] for s in ramp], [s[2] / 1024 for s in ramp], s=12, label=label)
    ax.set_xlabel("open file descriptors of the process (≈ connections)")
    ax.set_ylabel("RSS, MB")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "memory.png", dpi=90)
    plt.close(fig)
    return "memory.png"


def plot_reader_rates(private: dict[str, Any], out_dir: Path) -> str | None:
    phases = {label: p["rates"] for label, p in private.items() if p.get("rates")}
    if not phases:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, rates in phases.items():
        ax.hist(rates, bins=60, alpha=0.6, label=f"{label} ({len(rates):,} readers)")
    ax.set_xlabel("live updates per second received by one reader, during the run")
    ax.set_ylabel("readers")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "reader_rates.png", dpi=90)
    plt.close(fig)
    return "reader_rates.png"


# -- text ----------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "info"}[ok]


def phase_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(phase, metric, value) rows of the numbers worth reading first."""
    rows: list[tuple[str, str, str]] = []
    for label, phase in result["phases"].items():
        readers = phase.get("readers")
        if readers:
            fps = readers["frames_per_second"]
            lat = readers["latency_ms"]
            rates = readers["per_reader_updates_per_s"]
            rows += [
                (label, "readers connected / failed", f"{_fmt(readers['connected'])} / {_fmt(readers['failed'])}"),
                (label, "delivered frames/s median (p5..p95)", f"{_fmt(fps['median_per_s'])} ({_fmt(fps.get('p5'))}..{_fmt(fps.get('p95'))})"),
                (label, "per-update latency ms (receive - at) p50 / p95 / p99 / max", " / ".join(_fmt(lat.get(k)) for k in ("p50", "p95", "p99", "max"))),
                (label, "updates/s per reader min / p1 / p50", " / ".join(_fmt(rates.get(k)) for k in ("p0", "p1", "p50"))),
                (label, "one update to all readers, ms p50 / p99 (fan-out spread)",
                 f"{_fmt(readers['fanout_spread'].get('p50_ms'))} / {_fmt(readers['fanout_spread'].get('p99_ms'))}"),
                (label, "lost readers / skipped seqs (conflated) / dup / out-of-order / misrouted",
                 " / ".join([_fmt(phase.get("convergence", {}).get("lost_readers"))]
                            + [_fmt(readers[k]) for k in ("skipped", "duplicates", "out_of_order", "misrouted")])),
                (label, "reader CPU seconds (all processes)", _fmt(readers["reader_cpu_s"])),
            ]
            for method, clap in readers.get("per_clap_latency_ms", {}).items():
                rows.append((label, f"per-clap latency ms p50 / p95 / p99 / max ({method})",
                             " / ".join(_fmt(clap.get(k)) for k in ("p50", "p95", "p99", "max"))
                             + f" over {_fmt(clap['pairs'])} pairs, never {_fmt(clap['never'])}"))
            missed = readers.get("announcements_missed")
            if missed:
                rows.append((label, "announced totals / missed by a reader (readers)",
                             f"{_fmt(missed['announcements'])} / {_fmt(missed['missed'])} ({_fmt(missed['readers_missing_some'])})"))
        for server, values in phase.get("room_metrics", {}).items():
            rates = [f"{v:.2f}" for k, v in values.items() if k.startswith("gateway_room_updates_per_second")]
            count, total = values.get("gateway_room_pass_seconds_count"), values.get("gateway_room_pass_seconds_sum")
            mean = f"{1000 * total / count:.0f} ms" if count and total is not None else "-"
            rows.append((label, f"{server} /metrics at the end: room updates/s per reader; passes (mean)",
                         f"{', '.join(rates) or '-'}; {_fmt(int(count or 0))} ({mean})"))
        if "clappers" in phase:
            c = phase["clappers"]
            rows += [
                (label, "taps/s sent median / acked claps/s median", f"{_fmt(c['taps_per_second']['median_per_s'])} / {_fmt(c['acked_claps_per_second']['median_per_s'])}"),
                (label, "clap messages / acked claps / refused / unanswered", f"{_fmt(c['clap_messages'])} / {_fmt(c['claps_acked'])} / {c['claps_refused'] or 0} / {_fmt(c['claps_unanswered'])}"),
                (label, "ack latency ms p50 / p99", f"{_fmt(c['ack_latency_ms'].get('p50'))} / {_fmt(c['ack_latency_ms'].get('p99'))}"),
            ]
        for server, res in phase.get("servers", {}).items():
            rows += [
                (label, f"{server} CPU cores during run (main thread waiting for a core)",
                 f"{_fmt(res.get('cpu_cores_during_run'))} ({_fmt(res.get('main_thread_waiting_for_cpu_share'))})"),
                (label, f"{server} RSS MB idle -> connected (KB/conn)", f"{_fmt(res.get('rss_mb_idle'))} -> {_fmt(res.get('rss_mb_connected'))} ({_fmt(res.get('rss_kb_per_connection'))})"),
            ]
        noise = phase.get("other_processes_busy") or []
        if noise:
            rows.append((label, "other processes busy meanwhile (cores)",
                         ", ".join(f"{n['cores']:.2f} {n['command'][:40]}" for n in noise[:4])))
        machine = phase.get("machine_busy_share")
        if machine:
            rows.append((label, "machine share busy (user / system / softirq / steal)",
                         f"{_fmt(machine['busy'])} ({' / '.join(_fmt(machine[k]) for k in ('user', 'system', 'softirq', 'steal'))})"))
    return rows


def summary_text(result: dict[str, Any], report: Path | None = None) -> str:
    lines = [f"== {result['scenario']} ==  articles {result['article_prefix']}-*"]
    width = max((len(m) for _, m, _ in phase_rows(result)), default=20)
    for label, metric, value in phase_rows(result):
        lines.append(f"  {label:<9} {metric:<{width}}  {value}")
    if "fanout_ratio" in result:
        f = result["fanout_ratio"]
        lines.append(f"  fan-out: gateway {_fmt(f['gateway_frames_per_s_median'])} / baseline "
                     f"{_fmt(f['baseline_frames_per_s_median'])} frames/s = ratio {_fmt(f['ratio'])}")
        if f.get("per_core_ratio") is not None:
            lines.append(f"  fan-out per core: gateway {_fmt(f['gateway_frames_per_core_s'])} / baseline "
                         f"{_fmt(f['baseline_frames_per_core_s'])} frames per CPU-second = ratio {_fmt(f['per_core_ratio'])}")
    if "versus_reference" in result:
        lines += versus_reference_lines(result["versus_reference"])
    if "calibration" in result:
        c = result["calibration"]
        lines.append(f"  raw socket.send on this machine: sender {_fmt(c['sender_cpu_us_per_frame'])} µs/frame, receiver "
                     f"{_fmt(c['receiver_cpu_us_per_frame'])} µs/frame -> ceiling {_fmt(c['ceiling_frames_per_s_one_core'])} frames/s per core")
    lines.append("  checks:")
    for c in result["checks"]:
        lines.append(f"    [{_verdict(c['ok']):<4}] {c['check']}: {_fmt(c['value'])}  (target {c['target']})")
    if report is not None:
        lines.append(f"  report: {report}")
    return "\n".join(lines)


def versus_reference_lines(versus: dict[str, Any]) -> list[str]:
    ref, gw, ratios = versus["reference"], versus["gateway"], versus["ratios"]
    lines = [f"  versus the reference (per clap: {versus['method']}):",
             f"    {'':<10} {'p50 ms':>8} {'p99 ms':>8} {'upd/s/reader p50':>17} {'min':>6}"]
    for name, row in (("reference", ref), ("gateway", gw)):
        lines.append(f"    {name:<10} {_fmt(row['per_clap_p50_ms']):>8} {_fmt(row['per_clap_p99_ms']):>8} "
                     f"{_fmt(row['updates_per_reader_p50']):>17} {_fmt(row['updates_per_reader_min']):>6}")
    lines.append(f"    {'ratio':<10} {_fmt(ratios['per_clap_p50']):>8} {_fmt(ratios['per_clap_p99']):>8} "
                 f"{_fmt(ratios['updates_per_reader_p50']):>17} {_fmt(ratios['updates_per_reader_min']):>6}")
    return lines


def render_html(result: dict[str, Any], images: list[str]) -> str:
    def table(headers: list[str], rows: list[tuple[Any, ...]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    checks = [(_verdict(c["ok"]), c["check"], c["value"], c["target"]) for c in result["checks"]]
    profile_sections = []
    for label, phase in result["phases"].items():
        prof = phase.get("gateway_profile")
        if prof:
            profile_sections.append(f"<h3>gateway profile during {html.escape(label)} (py-spy, share of active samples)</h3>"
                                    + table(["self", "function"], [(s, f) for f, s in prof["self"][:15]])
                                    + table(["inclusive", "function"], [(s, f) for f, s in prof["inclusive"][:15]]))
    env = result.get("gateway_env", {})
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>loadtest {html.escape(result['scenario'])}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}} img{{max-width:100%}}</style></head><body>
<h1>loadtest: {html.escape(result['scenario'])}</h1>
<p>Per-update latency is <code>reader receive time - at</code>, where <code>at</code> is the gateway's receive time of the
newest clap in the update (same host, same clock): an older clap in the same window waited up to one window longer.
Per-clap latency (hot) is from each clap's send to each reader's first total that includes it, every clap to every
reader (see loadtest/README.md). Client-side batching, when used ({result['options']['batch_ms']} ms), happens before
the send and is not included.</p>
{"<h2>Versus the reference</h2><pre>" + html.escape(chr(10).join(versus_reference_lines(result["versus_reference"]))) + "</pre>" if "versus_reference" in result else ""}
<h2>Checks</h2>{table(["", "check", "value", "target"], checks)}
{table(["calibration: raw socket.send, one frame per socket", "value"], sorted(result["calibration"].items())) if "calibration" in result else ""}
<h2>Numbers</h2>{table(["phase", "metric", "value"], phase_rows(result))}
{"".join(f'<h2>{html.escape(i)}</h2><img src="{html.escape(i)}">' for i in images)}
{"".join(profile_sections)}
<h2>Settings</h2>{table(["option", "value"], sorted(result['options'].items()))}
{table(["gateway env", "value"], sorted(env.items())) if env else ""}
<p>Everything else is in <a href="result.json">result.json</a>.</p></body></html>"""
