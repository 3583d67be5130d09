"""loadtest.stacks prints the shares of the functions asked for, from all of them."""
from __future__ import annotations

import subprocess
import sys

from tests.support.processes import REPO


def test_matched_functions_are_printed_with_their_inclusive_and_self_shares(tmp_path):
    stacks = tmp_path / "profile.txt"
    stacks.write_text("main (a.py:1);serve (a.py:5);parse (b.py:9) 3\nmain (a.py:1);serve (a.py:6) 1\n")
    printed = subprocess.run([sys.executable, "-m", "loadtest.stacks", str(stacks), "--match", "parse", "serve"],
                             capture_output=True, text=True, cwd=REPO, check=True).stdout.splitlines()
    assert printed == ["inclusive", "  100.0 %  serve (a.py)", "   75.0 %  parse (b.py)",
                       "self", "   75.0 %  parse (b.py)", "   25.0 %  serve (a.py)"]
