"""Wait until a projector has caught up: its lag is 0 on every partition it owns and its record
counters have stood still for ``--still`` seconds (read from its /metrics). Exits 1 if not within
``--timeout``. Used between paired runs that restart the projector (loadtest/paired_projector.sh),
so that no run starts behind a backlog the one before it left.

    python -m loadtest.projector_caught_up [--metrics http://127.0.0.1:9102/metrics]
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.request

LAG = re.compile(r"^projector_lag\{.*\} (\S+)$", re.M)
RECORDS = re.compile(r"^projector_records_total\{.*\} (\S+)$", re.M)


def lag_and_records(text: str) -> tuple[float, float]:
    """The summed lag and records consumed in one scrape of the projector's metrics."""
    return sum(map(float, LAG.findall(text))), sum(map(float, RECORDS.findall(text)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", default="http://127.0.0.1:9102/metrics")
    parser.add_argument("--still", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    still_since, last = None, None
    while time.monotonic() < deadline:
        try:
            lag, records = lag_and_records(urllib.request.urlopen(args.metrics, timeout=2).read().decode())
        except OSError:
            time.sleep(0.5)  # not serving yet
            continue
        if lag == 0 and records == last:
            still_since = still_since or time.monotonic()
            if time.monotonic() - still_since >= args.still:
                print(f"projector caught up ({records:,.0f} records consumed since its start)")
                return 0
        else:
            still_since = None
        last = records
        time.sleep(0.5)
    print(f"projector not caught up within {args.timeout:.0f} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
