"""deploy/local/lib.sh's pid files: a running process is recognised by its recorded start time,
not by wall-clock times that a clock step moves, and a reused pid is not taken for ours."""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.processes import REPO


def _lib(script: str, run_dir: Path) -> str:
    result = subprocess.run(
        ["bash", "-c", f'source "{REPO}/deploy/local/lib.sh"; {script}'],
        capture_output=True, text=True, env={"CLAP_RUN_DIR": str(run_dir), "PATH": "/usr/bin:/bin"}, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_recorded_process_is_running_whatever_the_pid_files_time_and_a_reused_pid_is_not(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        check = 'if is_running demo; then echo running; else echo stale; fi'
        _lib(f"record_pid demo {sleeper.pid}", tmp_path)
        pid_file = tmp_path / "demo.pid"
        assert pid_file.read_text().split()[0] == str(sleeper.pid)
        assert _lib(check, tmp_path) == "running"
        # As if the clock had stepped back an hour after the process started.
        _lib(f'touch -d "@$(( $(date +%s) - 3600 ))" "{pid_file}"', tmp_path)
        assert _lib(check, tmp_path) == "running"
        # The same number, another start time: a reused pid, not ours.
        ticks = int(pid_file.read_text().split()[1])
        pid_file.write_text(f"{sleeper.pid}\n{ticks + 1}\n")
        assert _lib(check, tmp_path) == "stale"
        # A pid file of the old one-line form still works by its time.
        pid_file.write_text(f"{sleeper.pid}\n")
        assert _lib(check, tmp_path) == "running"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _lib(check, tmp_path) == "stale"
