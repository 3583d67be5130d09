"""The table docs/BENCHMARKS.md shows for the hot article comes from the runs' result.json files."""
from __future__ import annotations

from pathlib import Path

import orjson

from loadtest.summary import load, table


def fake_run(folder: Path, readers: int, ref_p99: float, gw_p99: float, ref_rate: float, gw_rate: float) -> Path:
    folder.mkdir()
    side = lambda p99, rate: {"per_clap_p50_ms": p99 / 2, "per_clap_p99_ms": p99,  # noqa: E731
                              "updates_per_reader_p50": rate, "updates_per_reader_min": rate - 0.5,
                              "bracket_p99_ms": {"ack_seq": None, "at_after_send": p99 - 10, "at_after_ack": p99}}
    phase = {"machine_busy_share": {"busy": 0.9}, "servers": {"x": {"main_thread_waiting_for_cpu_share": 0.2}}}
    result = {"scenario": "hot", "options": {"readers": readers},
              "phases": {"reference": phase, "gateway": phase},
              "versus_reference": {"method": "at_after_ack", "reference": side(ref_p99, ref_rate),
                                   "gateway": side(gw_p99, gw_rate),
                                   "ratios": {"per_clap_p99": round(gw_p99 / ref_p99, 3),
                                              "updates_per_reader_p50": round(gw_rate / ref_rate, 3)}}}
    (folder / "result.json").write_bytes(orjson.dumps(result))
    return folder


def test_one_row_per_run_and_the_median_per_size(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / f"r{i}-hot", 5000, 200.0, p99, 10.0, rate)
            for i, (p99, rate) in enumerate([(220.0, 9.0), (260.0, 9.5), (300.0, 10.0)])]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "result.json").write_bytes(orjson.dumps({"scenario": "fanout"}))
    assert load(tmp_path / "other") is None
    text = table([(f.name, load(f)) for f in runs])  # type: ignore[misc]
    lines = text.splitlines()
    assert len(lines) == 2 + 3 + 1
    assert "| `r1-hot` | 5,000 | at_after_ack | 100 / 200 | 130 / 260 | 1.30 | -; 190..200; -; 250..260 | 10.00 (9.50) | 9.50 (9.00) | 0.95 |" in text
    assert lines[-1].startswith("| **median of 3** | 5,000 |  | 100 / 200 | 130 / 260 | **1.30** |  | 10.00 (9.50) | 9.50 (9.00) | **0.95** |")
