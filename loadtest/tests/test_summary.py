"""The table docs/BENCHMARKS.md shows for the hot article comes from the runs' result.json files."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from loadtest.summary import fanout_table, load, load_fanout, main, table


def fake_run(folder: Path, readers: int, ref_p99: float, gw_p99: float, ref_rate: float, gw_rate: float) -> Path:
    folder.mkdir()
    side = lambda p99, rate: {"per_clap_p50_ms": p99 / 2, "per_clap_p99_ms": p99,  # noqa: E731
                              "updates_per_reader_p50": rate, "updates_per_reader_min": rate - 0.5,
                              "bracket_p99_ms": {"ack_seq": None, "at_after_send": p99 - 10, "at_after_ack": p99}}
    phase = {"machine_busy_share": {"busy": 0.9}, "servers": {"x": {"main_thread_waiting_for_cpu_share": 0.2}}}
    result = {"scenario": "hot", "options": {"readers": readers, "start_embedded": 1},
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
    assert "| `r1-hot` | embedded | 5,000 | at_after_ack | 100 / 200 | 130 / 260 | 1.30 | -; 190..200; -; 250..260 | 10.00 (9.50) | 9.50 (9.00) | 0.95 |" in text
    assert lines[-1].startswith("| **median of 3** | embedded | 5,000 |  | 100 / 200 | 130 / 260 | **1.30** |  | 10.00 (9.50) | 9.50 (9.00) | **0.95** |")


def fanout_run(folder: Path, distributed: bool, baseline: tuple[float, float], gateway: tuple[float, float],
               taps: float | None = None, **more: float) -> Path:
    folder.mkdir()
    phase = lambda frames, cores: {"readers": {"frames_per_second": {"median_per_s": frames}},  # noqa: E731
                                   "servers": {"s": {"cpu_cores_during_run": cores}}}
    options = {"start_distributed": 1 if distributed else 0, "start_embedded": 0 if distributed else 1,
               **({} if taps is None else {"clap_rate": taps}), **more}
    result = {"scenario": "fanout", "options": options,
              "phases": {"baseline": phase(*baseline), "gateway": phase(*gateway)}, "fanout_ratio": {}}
    (folder / "result.json").write_bytes(orjson.dumps(result))
    return folder


def test_fan_out_runs_are_compared_per_core_with_a_median_per_mode(tmp_path: Path) -> None:
    runs = [fanout_run(tmp_path / "a-fanout", False, (100_000, 1.0), (100_000, 0.8)),  # same frames, less CPU: 1.25
            fanout_run(tmp_path / "b-fanout", False, (90_000, 0.9), (60_000, 0.5)),  # fewer frames, 1.2 per core
            fanout_run(tmp_path / "c-fanout", False, (80_000, 0.8), (80_000, 1.0)),  # 0.8
            fanout_run(tmp_path / "d-fanout", True, (100_000, 1.0), (50_000, 0.25))]  # 2.0
    assert load(runs[0]) is None and load_fanout(runs[0]) is not None
    lines = fanout_table([(f.name, load_fanout(f)) for f in runs]).splitlines()  # type: ignore[misc]
    assert lines[2] == "| `a-fanout` | embedded | 100,000, 1.000, 100,000 | 100,000, 0.800, 125,000 | 1.000 | 1.250 |"
    assert lines[-2] == "| **median of 1** | distributed | | | 0.500 | **2.000** |"
    assert lines[-1] == "| **median of 3** | embedded | | | 1.000 | **1.200** |"


def test_a_run_without_its_result_is_left_out_and_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = fake_run(tmp_path / "a-hot", 5000, 200.0, 220.0, 10.0, 9.0)
    going = tmp_path / "b-hot"
    going.mkdir()  # a run still going: its folder is there, its result.json not yet
    main([str(done), str(going)])
    out, err = capsys.readouterr()
    assert "| `a` |" in out and "`b`" not in out
    assert f"{going}: no result.json" in err


def test_fan_out_runs_that_took_different_clap_rates_or_ticks_get_medians_of_their_own(tmp_path: Path) -> None:
    old = {"baseline_interval_ms": 5.0}  # a run from before the tool recorded its window and tick
    runs = [fanout_run(tmp_path / "a-fanout", True, (100_000, 1.0), (100_000, 0.8), taps=100, **old),  # 1.25
            fanout_run(tmp_path / "b-fanout", True, (100_000, 1.0), (100_000, 0.9), taps=800, **old),  # 1.111
            fanout_run(tmp_path / "c-fanout", True, (100_000, 1.0), (100_000, 0.5), taps=100, **old),  # 2.0
            fanout_run(tmp_path / "d-fanout", True, (100_000, 1.0), (100_000, 0.4), taps=100,  # 2.5
                       window_ms=100, baseline_interval_ms=100.0)]
    recorded = fanout_run(tmp_path / "e-fanout", True, (100_000, 1.0), (100_000, 0.5))  # 2.0, as the tool now records
    result = orjson.loads((recorded / "result.json").read_bytes())
    result["fanout_ratio"] = {"gateway_taps_per_s": 100.0, "gateway_window_ms": 100, "baseline_tick_ms": 100.0}
    (recorded / "result.json").write_bytes(orjson.dumps(result))
    lines = fanout_table([(f.name, load_fanout(f)) for f in [*runs, recorded]]).splitlines()  # type: ignore[misc]
    assert lines[2].startswith("| `a-fanout` | distributed, 100 taps/s, baseline tick 5 ms |")
    assert lines[-3] == "| **median of 2** | distributed, 100 taps/s, baseline tick 5 ms | | | 1.000 | **1.625** |"
    assert lines[-2] == "| **median of 2** | distributed, 100 taps/s, window 100 ms, baseline tick 100 ms | | | 1.000 | **2.250** |"
    assert lines[-1] == "| **median of 1** | distributed, 800 taps/s, baseline tick 5 ms | | | 1.000 | **1.111** |"
