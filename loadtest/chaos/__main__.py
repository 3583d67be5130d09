"""python -m loadtest.chaos: the fault suite against the deployment of `make up-ha`.

    python -m loadtest.chaos                               every fault (what `make chaos` runs)
    python -m loadtest.chaos --faults gateway-kill,leader-kill
    python -m loadtest.chaos --list

Prints one row per fault as it goes and a table at the end; writes everything to
loadtest/results/<time>-chaos/result.json. Exits 1 if any phase lost an acked clap, counted one
twice, left a source disagreeing with the clap log, or showed a reader a total going back.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from loadtest.chaos.deployment import REPO
from loadtest.chaos.faults import FAULTS
from loadtest.chaos.suite import ALL_FAULTS, Suite, SuiteConfig, table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get("HA_RUN_DIR", REPO / ".run" / "ha")),
                        help="the deployment's run directory (default: $HA_RUN_DIR or .run/ha)")
    parser.add_argument("--faults", default="all", help=f"comma-separated, or 'all' ({','.join(ALL_FAULTS)})")
    parser.add_argument("--no-baseline", action="store_true", help="skip the fault-free first phase")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument("--clappers", type=int, default=8)
    parser.add_argument("--clap-rate", type=float, default=2.0, help="batches per second per clapper")
    parser.add_argument("--readers", type=int, default=12)
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds of steady load before a fault")
    parser.add_argument("--down", type=float, default=10.0, help="seconds a killed component stays dead")
    parser.add_argument("--stall", type=float, default=30.0, help="seconds a broker stays SIGSTOPped")
    parser.add_argument("--after", type=float, default=8.0, help="seconds of load after the heal")
    parser.add_argument("--settle-timeout", type=float, default=90.0)
    parser.add_argument("--time-limit", type=float, default=1800.0, help="seconds for the whole suite")
    parser.add_argument("--out", type=Path, default=None, help="result directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, fault in FAULTS.items():
            print(f"{name:16} {fault.__doc__}")
        return 0
    faults = ALL_FAULTS if args.faults == "all" else [f for f in args.faults.split(",") if f]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        print(f"unknown faults {unknown}; --list shows them", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("aiokafka", "cassandra", "websockets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    config = SuiteConfig(
        run_dir=args.run_dir, faults=faults, baseline=not args.no_baseline, clappers=args.clappers,
        clap_rate=args.clap_rate, readers=args.readers, warmup_s=args.warmup, down_s=args.down,
        stall_s=args.stall, after_s=args.after, settle_timeout_s=args.settle_timeout, deadline_s=args.time_limit,
    )
    began = time.monotonic()
    results = asyncio.run(Suite(config).run())
    elapsed = time.monotonic() - began
    print()
    print(table(results))
    print(f"\n{len(results) - 1} phases in {elapsed:.0f} s")
    out = args.out or REPO / "loadtest" / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-chaos"
    out.mkdir(parents=True, exist_ok=True)
    doc = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
           "elapsed_s": round(elapsed, 1), "phases": [{**asdict(r), "ok": r.ok} for r in results]}
    (out / "result.json").write_text(json.dumps(doc, indent=2))
    print(f"results: {out / 'result.json'}")
    failed = [r.fault for r in results if not r.ok]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
