"""What "N reading now" costs each gateway at the planned load (docs/DESIGN.md, "Who is reading now").

    python -m loadtest.presence_cost [--readers 100000] [--articles 10000] [--gateways 7] [--seconds 20]

Spreads the readers as the capacity plan does (one article with 10% of them, the rest evenly over
the others) over the gateways at random, then simulates ``--seconds`` seconds in which 1% of the
readers leave and as many join each second. Each second every gateway builds its report (as
``gateway.presence`` does: every article it has readers of), and one gateway encodes its own and
decodes and applies all of them (``core.presence``), as each gateway does. It prints the report size,
the bytes each gateway reads from the presence topic per second, the CPU time per second of
that work for one gateway, how many articles' sums change a second, and how many presence
frames one gateway then writes to its readers a second.
No servers needed; one core for a few seconds.
"""
from __future__ import annotations

import argparse
import random
import time
from collections import Counter

from core.presence import PresenceReport, PresenceTally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--gateways", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    def article_of_a_new_reader() -> str:
        return "hot" if rng.random() < 0.1 else f"article-{rng.randrange(1, args.articles):05d}"

    readers = [(rng.randrange(args.gateways), article_of_a_new_reader()) for _ in range(args.readers)]
    tally = PresenceTally()
    seqs = [0] * args.gateways
    cpu_s, sizes, changed_per_second, frames_per_second = 0.0, [], [], []
    for second in range(args.seconds):
        for _ in range(args.readers // 100):  # churn: 1% leave, as many arrive
            readers[rng.randrange(len(readers))] = (rng.randrange(args.gateways), article_of_a_new_reader())
        per_gateway = [Counter() for _ in range(args.gateways)]
        for gateway, article in readers:
            per_gateway[gateway][article] += 1
        started = time.process_time()
        raw = []
        for gateway, counts in enumerate(per_gateway):
            seqs[gateway] += 1
            raw.append(PresenceReport(f"gateway-{gateway}", seqs[gateway], dict(counts), second).to_json())
        encode_s = (time.process_time() - started) / args.gateways  # each gateway encodes its own
        started = time.process_time()
        changed = set()
        for payload in raw:  # one gateway hears every report
            changed |= tally.apply(PresenceReport.from_json(payload), now_ms=second * 1000)
        hear_s = time.process_time() - started
        if second:  # the first second loads everything; after that, the steady state
            cpu_s += encode_s + hear_s
            sizes.extend(len(p) for p in raw)
            changed_per_second.append(len(changed))
            # Gateway 0 writes one presence frame to each of its readers of a changed article.
            frames_per_second.append(sum(per_gateway[0][article] for article in changed))
    steady = args.seconds - 1
    report_bytes = sum(sizes) / len(sizes)
    print(f"readers {args.readers:,}, articles {args.articles:,}, gateways {args.gateways}, "
          f"1% churn a second, {steady} s measured")
    print(f"report size per gateway:            {report_bytes / 1024:,.0f} KiB (every article it has readers of)")
    print(f"presence bytes read per gateway:    {report_bytes * args.gateways / 1024 / 1024:,.2f} MiB/s")
    print(f"CPU per gateway for presence:       {cpu_s / steady * 1000:,.0f} ms/s "
          f"({cpu_s / steady * 100:.1f}% of a core)")
    print(f"articles whose sum changed:         {sum(changed_per_second) / steady:,.0f}/s "
          f"(each room here gets at most 1 presence message a second)")
    print(f"presence frames written per gateway: {sum(frames_per_second) / steady:,.0f}/s")


if __name__ == "__main__":
    main()
