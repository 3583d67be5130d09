"""python -m loadtest.summary RESULT_DIR...: hot and fanout runs, one row each, and medians.

Prints the Markdown tables docs/BENCHMARKS.md shows. For the hot article (``<stamp>-hot``): per run,
the reference's and the gateway's per-clap latency and updates/s per reader, the gateway/reference
ratios, the machine's load, and per number of readers the median of each column; runs without a
reference phase are left out. For fan-out (``<stamp>-fanout``): per run, the frames/s each server
delivered, the CPU it spent, frames per CPU-second and the gateway/baseline ratios, with medians
per mode (embedded or distributed, and the taps/s the gateway took beside its fan-out).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import orjson

from loadtest.analysis import server_cores

COLUMNS = (
    ("reference per-clap p50 / p99 ms",
     lambda v: (v["reference"]["per_clap_p50_ms"], v["reference"]["per_clap_p99_ms"], "p99")),
    ("gateway per-clap p50 / p99 ms", lambda v: (v["gateway"]["per_clap_p50_ms"], v["gateway"]["per_clap_p99_ms"], "p99")),
    ("p99 ratio", lambda v: v["ratios"]["per_clap_p99"]),
    ("p99 by each method, reference / gateway: exact; after send..after ack",
     lambda v: "; ".join(f"{_number(side['bracket_p99_ms'].get('ack_seq'))}; "
                         f"{_number(side['bracket_p99_ms'].get('at_after_send'))}..{_number(side['bracket_p99_ms'].get('at_after_ack'))}"
                         for side in (v["reference"], v["gateway"]))),
    ("reference upd/s per reader p50 (min)",
     lambda v: (v["reference"]["updates_per_reader_p50"], v["reference"]["updates_per_reader_min"], "min")),
    ("gateway upd/s per reader p50 (min)",
     lambda v: (v["gateway"]["updates_per_reader_p50"], v["gateway"]["updates_per_reader_min"], "min")),
    ("upd/s ratio", lambda v: v["ratios"]["updates_per_reader_p50"]),
)


def _read(folder: Path) -> dict[str, Any]:
    """A run's result; {} for a run still going or one that ended before writing it (said on stderr)."""
    try:
        return orjson.loads((folder / "result.json").read_bytes())
    except FileNotFoundError:
        print(f"{folder}: no result.json (a run still going, or one that failed); left out", file=sys.stderr)
        return {}


def load(folder: Path) -> dict[str, Any] | None:
    result = _read(folder)
    if result.get("scenario") != "hot" or "versus_reference" not in result:
        return None
    return result


def load_fanout(folder: Path) -> dict[str, Any] | None:
    result = _read(folder)
    return result if result.get("scenario") == "fanout" and "fanout_ratio" in result else None


def _mode(result: dict[str, Any]) -> str:
    """Which gateway a run measured: one it started (embedded or distributed) or one it was given."""
    options = result["options"]
    if options.get("start_distributed"):
        return "distributed"
    return "embedded" if options.get("start_embedded") else "given"


def _fanout_mode(result: dict[str, Any]) -> str:
    """The gateway, the claps it took beside its fan-out, its window and the baseline's tick: runs
    differing in any of them are not pooled. Runs from before the tool recorded the window and the
    tick it used give what their options said (a tick of 5 ms was the default then)."""
    options, fanout = result["options"], result.get("fanout_ratio", {})
    taps = fanout.get("gateway_taps_per_s", options.get("clap_rate"))
    window = fanout.get("gateway_window_ms", options.get("window_ms"))
    tick = fanout.get("baseline_tick_ms", options.get("baseline_interval_ms"))
    parts = [_mode(result)]
    if taps is not None:
        parts.append(f"{taps:,.0f} taps/s")
    if window is not None:
        parts.append(f"window {window:g} ms")
    if tick is not None:
        parts.append(f"baseline tick {tick:g} ms")
    return ", ".join(parts)


def fanout_row(result: dict[str, Any]) -> dict[str, Any]:
    """One fan-out run's figures; per core = delivered frames/s over the server's CPU cores."""
    row: dict[str, Any] = {"mode": _fanout_mode(result)}
    for phase in ("baseline", "gateway"):
        frames = result["phases"][phase]["readers"]["frames_per_second"]["median_per_s"]
        cores = server_cores(result["phases"][phase])
        row[phase] = (frames, cores, frames / cores if frames and cores else None)
    (g, _, g_core), (b, _, b_core) = row["gateway"], row["baseline"]
    row["ratio"] = g / b if g and b else None
    row["per_core_ratio"] = g_core / b_core if g_core and b_core else None
    return row


def fanout_table(results: list[tuple[str, dict[str, Any]]]) -> str:
    head = ["run", "mode", "baseline frames/s, cores, per core", "gateway frames/s, cores, per core",
            "frames/s ratio", "**per-core ratio**"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_mode: dict[str, list[dict[str, Any]]] = {}

    def side(value: tuple[float, float, float | None]) -> str:
        frames, cores, per_core = value
        return f"{_number(float(frames))}, {cores:.3f}, {_number(per_core)}"

    for name, result in results:
        row = fanout_row(result)
        by_mode.setdefault(row["mode"], []).append(row)
        lines.append(f"| `{name}` | {row['mode']} | {side(row['baseline'])} | {side(row['gateway'])} | "
                     f"{row['ratio']:.3f} | {row['per_core_ratio']:.3f} |")
    for mode, rows in sorted(by_mode.items()):
        ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
        per_core = [r["per_core_ratio"] for r in rows if r["per_core_ratio"] is not None]
        lines.append(f"| **median of {len(rows)}** | {mode} | | | {statistics.median(ratios):.3f} | "
                     f"**{statistics.median(per_core):.3f}** |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """A pair is ``p50 / p99`` or ``p50 (min)``: the two kinds of pair the columns hold."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        first, second, shape = value
        return f"{_number(first)} ({_number(second)})" if shape == "min" else f"{_number(first)} / {_number(second)}"
    return _number(value)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def _busy(result: dict[str, Any], phase: str) -> str:
    share = (result["phases"][phase].get("machine_busy_share") or {}).get("busy")
    waiting = [s.get("main_thread_waiting_for_cpu_share") for s in result["phases"][phase]["servers"].values()]
    return f"{_number(share)} / {_number(waiting[0] if waiting else None)}"


def table(results: list[tuple[str, dict[str, Any]]]) -> str:
    head = ["run", "mode", "readers", "method"] + [name for name, _ in COLUMNS] + [
        "machine busy / server waiting for a core: reference; gateway"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_readers: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for name, result in results:
        versus = result["versus_reference"]
        readers = result["options"]["readers"]
        mode = _mode(result)
        by_readers.setdefault((mode, readers), []).append(versus)
        cells = [f"`{name}`", mode, f"{readers:,}", versus["method"]] + [_cell(get(versus)) for _, get in COLUMNS]
        cells.append(f"{_busy(result, 'reference')}; {_busy(result, 'gateway')}")
        lines.append("| " + " | ".join(cells) + " |")
    for (mode, readers), runs in sorted(by_readers.items()):
        cells = [f"**median of {len(runs)}**", mode, f"{readers:,}", ""]
        for _, get in COLUMNS:
            values = [get(v) for v in runs]
            if isinstance(values[0], str):
                cells.append("")
            elif isinstance(values[0], tuple):
                firsts = [x[0] for x in values if x[0] is not None]
                seconds = [x[1] for x in values if x[1] is not None]
                cells.append(_cell((statistics.median(firsts) if firsts else None,
                                    statistics.median(seconds) if seconds else None, values[0][2])))
            else:
                present = [x for x in values if x is not None]
                cells.append(f"**{_number(statistics.median(present))}**" if present else "-")
        cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    folders = sorted(args.folders)
    results = [(f.name.removesuffix("-hot"), r) for f in folders if (r := load(f)) is not None]
    fanouts = [(f.name.removesuffix("-fanout"), r) for f in folders if (r := load_fanout(f)) is not None]
    if results:
        print(table(results))
    if fanouts:
        print(("\n" if results else "") + fanout_table(fanouts))


if __name__ == "__main__":
    main()
