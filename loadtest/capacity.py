"""The capacity arithmetic of docs/DESIGN.md (§6, §10, §11): measured per-process figures in,
needs per scale out, with every assumption a flag.

    python -m loadtest.capacity [--tail-updates 1.0] [--average-share 0.3] [--clap-events-average 1000]

Nothing here is measured: it multiplies. The measured inputs are constants below, each naming the
command and run it comes from (docs/BENCHMARKS.md); the assumptions are the flags, printed with
the tables. Prices are list prices with their source and date (docs/DESIGN.md §10.3).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from core.messages import CountChanged
from gateway.rooms import text_frame

# -- measured (docs/BENCHMARKS.md) ----------------------------------------------------------------
FRAMES_PER_GATEWAY_CORE = 75_900  # fanout, distributed, median of 3 runs
CONNECTIONS_PER_GATEWAY = 18_000  # MAX_CONNECTIONS (under 20,000 open files); platform run held 100,000 on 6
EVENTS_PER_WORKER = 12_648  # loadtest.processor_rate at a5efcdc (claps past Faust's streams, processor/intake.py), one worker, 100 articles: median of 3 runs paired with 96f0446, 2026-12-02
# loadtest.hot_article: one article costs a worker the same CPU per event as a hundred, so its
# ceiling is one worker's.
HOT_ARTICLE_EVENTS_PER_WORKER = EVENTS_PER_WORKER
FEED_IDLE_CORES = 0.035  # loadtest.feed_cost: a gateway's feed consumer with little to read
FEED_US_PER_TOTAL = 15.0  # loadtest.feed_cost all-all: µs of gateway CPU per total read and passed to a room
FEED_US_PER_DROPPED_TOTAL = 9.0  # loadtest.feed_cost share-all: per total read and dropped (no room here)
LOG_BYTES_PER_EVENT = 188  # loadtest.log_bytes, batched: one copy on a broker's disk
LOG_BYTES_PER_EVENT_GZIP = 39  # loadtest.log_bytes, batched, gzip (synthetic ids: an upper bound on the ratio)
CASSANDRA_WRITES_PER_CORE = 7_000  # single-node ingest run: ~0.13 core at <= 1,000 writes/s (an extrapolation)

# -- protocol overheads (assumptions: TLS 1.3 with AES-GCM, IPv4, TCP timestamps, one frame a segment)
TLS_RECORD_OVERHEAD = 22
RECORD_OVERHEAD = 30  # a Kafka record's share of its batch, batched (loadtest.log_bytes: 188 B for 154 B of JSON)
TCP_IP_HEADERS = 52
PING_INTERVAL_S = 20
UPDATES_PER_S_HOT = 10  # one total per 100 ms window

# -- list prices, USD (docs/DESIGN.md §10.3 names each source and the date read) -----------------
EGRESS_TIERS_PER_GB = ((10_000, 0.09), (40_000, 0.085), (100_000, 0.07), (math.inf, 0.05))  # us-east-1, GB/month
CROSS_AZ_PER_GB = 0.02  # $0.01 out + $0.01 in
EBS_GP3_PER_GB_MONTH = 0.08
S3_STANDARD_PER_GB_MONTH = 0.023
SECONDS_PER_MONTH = 730 * 3600


def count_frame_bytes() -> int:
    """A count frame as a room sends it: a 24-character article id, 7-digit totals, 8-digit seq."""
    return len(text_frame(CountChanged("a" * 24, 1_234_567, 12, 98_765_432, 1, 1_764_000_000_000).to_json()))


def egress_cost(gb_per_month: float) -> float:
    cost, left, floor = 0.0, gb_per_month, 0.0
    for ceiling, price in EGRESS_TIERS_PER_GB:
        span = min(left, ceiling - floor)
        cost += span * price
        left -= span
        floor = ceiling
        if left <= 0:
            break
    return cost


@dataclass(frozen=True)
class Scale:
    name: str
    readers: int
    hot_readers: int
    active_articles: int
    clap_events_peak: int  # events/s the ingest must take at peak


SCALES = (
    Scale("100k (the plan)", 100_000, 10_000, 10_000, 10_000),
    Scale("1M, 100k on one article", 1_000_000, 100_000, 100_000, 100_000),
    Scale("10M, 1M on one article", 10_000_000, 1_000_000, 1_000_000, 1_000_000),
)


def frames_per_s(scale: Scale, tail_updates: float) -> float:
    tail = scale.readers - scale.hot_readers
    return scale.hot_readers * UPDATES_PER_S_HOT + tail * tail_updates + scale.readers / PING_INTERVAL_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tail-updates", type=float, default=1.0, help="updates/s a long-tail reader gets (assumption)")
    parser.add_argument("--average-share", type=float, default=0.3, help="average load as a share of peak (assumption)")
    parser.add_argument("--clap-events-average", type=float, default=1_000, help="clap events/s averaged over a day at 100k readers (assumption)")
    parser.add_argument("--partitions", type=int, default=12, help="clap topic partitions (fixed for its life)")
    options = parser.parse_args()

    frame = count_frame_bytes()
    wire = frame + TLS_RECORD_OVERHEAD + TCP_IP_HEADERS
    print(f"count frame: {frame} B; on the wire with TLS and TCP/IP: {wire} B (assumed overheads "
          f"{TLS_RECORD_OVERHEAD} + {TCP_IP_HEADERS})\n")

    print("| scale | frames/s to readers at peak | egress at peak | egress/month at the average | its list price/month | gateways (by connections, +1) | gateway cores for the frames |")
    print("|---|---|---|---|---|---|---|")
    for scale in SCALES:
        frames = frames_per_s(scale, options.tail_updates)
        egress = frames * wire
        month_gb = egress * options.average_share * SECONDS_PER_MONTH / 1e9
        gateways = math.ceil(scale.readers / CONNECTIONS_PER_GATEWAY) + 1
        print(f"| {scale.name} | {frames:,.0f} | {egress * 8 / 1e9:,.2f} Gbit/s | {month_gb:,.0f} GB "
              f"| ${egress_cost(month_gb):,.0f} | {gateways:,} | {frames / FRAMES_PER_GATEWAY_CORE:,.1f} |")

    total_bytes = len(CountChanged("a" * 24, 1_234_567, 12, 98_765_432, 1, 1_764_000_000_000).to_json()) + RECORD_OVERHEAD
    print("\n| scale | totals/s on the fan-out topic | feed CPU per gateway, every total (lower bound) | routed by shard | fan-out bytes out of the brokers, every gateway reads all | routed | clap events/s at peak | workers (×2 headroom) vs clap partitions | Cassandra writes/s (totals + reader rows) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scale in SCALES:
        gateways = math.ceil(scale.readers / CONNECTIONS_PER_GATEWAY) + 1
        # The hot article's 10 a second, and each active tail article's updates.
        totals = UPDATES_PER_S_HOT + scale.active_articles * options.tail_updates
        every = FEED_IDLE_CORES + totals * FEED_US_PER_DROPPED_TOTAL / 1e6
        # Routed: a gateway reads about its 1/G share (the hot article's partition aside).
        routed = FEED_IDLE_CORES + totals / (gateways - 1) * FEED_US_PER_TOTAL / 1e6
        workers = math.ceil(2 * scale.clap_events_peak / EVENTS_PER_WORKER)
        # A total per changed article per window, and a reader's row per changed reader.
        writes = min(totals, scale.active_articles * UPDATES_PER_S_HOT) + scale.clap_events_peak
        print(f"| {scale.name} | {totals:,.0f} | {every:,.2f} core | {routed:,.2f} core "
              f"| {gateways * totals * total_bytes / 1e6:,.0f} MB/s | {totals * total_bytes / 1e6:,.1f} MB/s "
              f"| {scale.clap_events_peak:,} | {workers:,} vs {options.partitions} | {writes:,.0f} "
              f"(≈ {3 * writes / CASSANDRA_WRITES_PER_CORE:,.0f} cores at RF 3) |")

    print("\nclap log kept forever (one copy = bytes on one broker; RF 3 keeps three):")
    print("| clap events/s | per day, one copy | per year, RF 3 on broker disks | its price/month after a year (gp3 ×3) | tiered: S3 one copy after a year | gzip, RF 3, per year |")
    print("|---|---|---|---|---|---|")
    for label, rate in (("average (assumed)", options.clap_events_average), ("peak target held all day", 10_000)):
        day = rate * 86_400 * LOG_BYTES_PER_EVENT / 1e9
        year_rf3 = day * 365 * 3
        print(f"| {rate:,.0f} ({label}) | {day:,.1f} GB | {year_rf3 / 1e3:,.1f} TB | ${year_rf3 * EBS_GP3_PER_GB_MONTH:,.0f} "
              f"| ${day * 365 * S3_STANDARD_PER_GB_MONTH:,.0f} | {rate * 86_400 * LOG_BYTES_PER_EVENT_GZIP * 365 * 3 / 1e12:,.1f} TB |")

    year_events = options.clap_events_average * 365 * 86_400
    replay_days = year_events / (options.partitions * EVENTS_PER_WORKER) / 86_400
    print(f"\nreplaying a year of the log from offset 0 (a rebuild): {year_events / 1e9:,.1f} billion events at "
          f"{options.partitions} workers × {EVENTS_PER_WORKER:,} events/s = {replay_days:,.1f} days")

    print("\none hot article (one partition, one worker):")
    print(f"ceiling: {HOT_ARTICLE_EVENTS_PER_WORKER:,} clap events/s = {HOT_ARTICLE_EVENTS_PER_WORKER * 4.85:,.0f} taps/s "
          f"at 4.85 taps per event; it breaks when more than 1 reader in "
          f"{100_000 / HOT_ARTICLE_EVENTS_PER_WORKER:,.0f} of a 100,000-reader article claps in the same second")


if __name__ == "__main__":
    main()
