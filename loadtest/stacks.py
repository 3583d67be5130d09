"""Where a profiled process's time went: self and inclusive shares per function of py-spy's raw
(collapsed) stacks, as the hot and ingest scenarios' ``--profile`` store them in ``result.json``.

    python -m loadtest.stacks FILE [--top 25] [--match TEXT ...]

FILE is a ``gateway-profile.txt`` of a run or a ``processor-rate-*.prof`` of
``loadtest.processor_rate --profile``. ``--match`` keeps only the functions whose frame contains
one of the texts (from all functions, not only the top ones).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from loadtest.services import summarize_collapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", nargs="*", default=[])
    args = parser.parse_args()
    shares = summarize_collapsed(args.file, top=10**6 if args.match else args.top)
    for kind in ("inclusive", "self"):
        print(kind)
        for frame, share in shares[kind]:
            if not args.match or any(text in frame for text in args.match):
                print(f"  {share * 100:5.1f} %  {frame}")


if __name__ == "__main__":
    main()
