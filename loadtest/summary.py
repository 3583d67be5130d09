"""python -m loadtest.summary RESULT_DIR...: hot runs against the reference, one row each, and medians.

Prints the Markdown table docs/BENCHMARKS.md shows for the hot article: per run, the reference's
and the gateway's per-clap latency and updates/s per reader, the gateway/reference ratios, the
machine's load, and per number of readers the median of each column. Give it the run folders
(``loadtest/results/<stamp>-hot``); runs without a reference phase are left out.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import orjson

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


def load(folder: Path) -> dict[str, Any] | None:
    result = orjson.loads((folder / "result.json").read_bytes())
    if result.get("scenario") != "hot" or "versus_reference" not in result:
        return None
    return result


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
    head = ["run", "readers", "method"] + [name for name, _ in COLUMNS] + [
        "machine busy / server waiting for a core: reference; gateway"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_readers: dict[int, list[dict[str, Any]]] = {}
    for name, result in results:
        versus = result["versus_reference"]
        readers = result["options"]["readers"]
        by_readers.setdefault(readers, []).append(versus)
        cells = [f"`{name}`", f"{readers:,}", versus["method"]] + [_cell(get(versus)) for _, get in COLUMNS]
        cells.append(f"{_busy(result, 'reference')}; {_busy(result, 'gateway')}")
        lines.append("| " + " | ".join(cells) + " |")
    for readers, runs in sorted(by_readers.items()):
        cells = [f"**median of {len(runs)}**", f"{readers:,}", ""]
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
    results = [(f.name.removesuffix("-hot"), r) for f in sorted(args.folders) if (r := load(f)) is not None]
    print(table(results))


if __name__ == "__main__":
    main()
