"""python -m loadtest {fanout,hot,platform,ingest,all,calibrate} [options]; see loadtest/README.md."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson

from loadtest import report
from loadtest.calibrate import calibrate
from loadtest.scenarios import Options, execute

# Small sizes by default so that a smoke run of any scenario takes well under a minute.
SCENARIO_DEFAULTS: dict[str, dict[str, object]] = {
    # Fan-out's clappers only have to give the room a new total per window; the bare broadcast
    # takes no claps at all, so a heavier intake would be billed to the gateway's fan-out.
    "fanout": {"readers": 1000, "duration_s": 10.0, "clap_rate": 100.0},
    "hot": {"readers": 1000, "duration_s": 10.0, "clap_rate": 1000.0},
    "platform": {"readers": 2000, "duration_s": 5.0, "clap_rate": 100.0, "articles": 200, "hot_share": 0.1,
                 "articles_per_session": 5, "hold_s": 5.0},
    "ingest": {"readers": 0, "duration_s": 10.0, "clap_rate": 2000.0, "articles": 100, "hot_share": 0.1,
               "articles_per_session": 5, "click_rate": 20.0},
}

HELP = {
    "fanout": "N readers of one article: gateway delivered frames/s vs a bare websockets broadcast baseline",
    "hot": "N readers of one article while clappers tap at --clap-rate, first against the Node reference of our "
           "contract, then the gateway: per-clap latency, updates/s per reader, ratios; convergence, loss",
    "platform": "many connections over many articles across --gateway URLs; idle memory, routing",
    "ingest": "clappers only, at --clap-rate; acked claps/s and acks vs final totals (distributed pipeline)",
    "all": "smoke: fanout then hot, each against an embedded gateway this tool starts",
    "calibrate": "raw socket.send cost per frame on this machine: the fan-out ceiling of one core",
}


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("size and duration")
    g.add_argument("--readers", type=int, help="reader websockets (fanout/hot default 1000, platform 2000)")
    g.add_argument("--duration", dest="duration_s", type=float, help="seconds of traffic (default 10)")
    g.add_argument("--clap-rate", type=float, help="taps (clap events) per second offered by all clappers")
    g.add_argument("--articles", type=int, help="articles: the hot one plus a Zipf tail (platform/ingest)")
    g.add_argument("--hot-share", type=float, help="share of readers/clappers on the hot article")
    g.add_argument("--hold", dest="hold_s", type=float, help="platform: seconds to hold idle connections")
    s = common.add_argument_group("servers")
    s.add_argument("--start-embedded", nargs="?", type=int, const=1, default=0, metavar="N",
                   help="start N embedded gateways (default 1) on free ports with fresh data, and stop them after")
    s.add_argument("--start-distributed", nargs="?", type=int, const=1, default=0, metavar="N",
                   help="start N distributed gateways (python -m gateway, CLAP_MODE=distributed, the `make up` "
                        "Kafka/Cassandra/processor/projector) on free ports, and stop them by pid after")
    s.add_argument("--gateway", dest="gateways", action="append", default=[], metavar="URL",
                   help="ws://host:port/ws of a running gateway (repeatable)")
    s.add_argument("--gateway-pid", dest="gateway_pids", action="append", type=int, default=[], metavar="PID",
                   help="pid of each --gateway, in the same order, for CPU/RSS sampling")
    s.add_argument("--gateway-env", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="extra environment for --start-embedded gateways, e.g. CLAPS_PER_SECOND=100")
    s.add_argument("--window-ms", type=int, help="CLAP_WINDOW_MS for started gateways (default: theirs, 100)")
    s.add_argument("--baseline-interval-ms", type=float,
                   help="fanout: baseline broadcast tick (default: the gateway's window, so both get the same totals)")
    c = common.add_argument_group("clients")
    c.add_argument("--reader-procs", type=int, help="reader processes (default: 2, or one per 8,000 readers)")
    c.add_argument("--clapper-procs", type=int, help="clapper processes (default 1)")
    c.add_argument("--source-ips", type=int, help="loopback source addresses 127.0.0.2.. for readers (default 8)")
    c.add_argument("--connect-concurrency", type=int, help="handshakes in flight, all processes (default 96)")
    c.add_argument("--connect-timeout", dest="connect_timeout_s", type=float, help="seconds for all readers to connect")
    c.add_argument("--settle-timeout", dest="settle_timeout_s", type=float, help="seconds to wait for convergence")
    c.add_argument("--click-rate", type=float, help="taps per second of one clapper (default 8)")
    c.add_argument("--batch-ms", type=float, help="client-side batching of taps (default 250)")
    c.add_argument("--clap-count", type=int, choices=(0, 1),
                   help="1: every tap is its own clap of count 1, so --clap-rate is clap events/s "
                        "(the hot benchmark's load); 0 (default): taps batched every --batch-ms")
    c.add_argument("--no-reference", dest="reference", action="store_false", default=None,
                   help="hot: skip the Node reference phase (loadtest/reference) that runs first by default")
    c.add_argument("--articles-per-session", type=int, help="articles one clapper session claps on")
    c.add_argument("--overclap-share", type=float, help="share of clappers tapping past the 50 cap (default 0.05)")
    c.add_argument("--close-sessions-at-end", action="store_true", default=None,
                   help="clappers keep finished users' sockets open until tapping ends (works around the "
                        "gateway keepalive crash on a socket that is closing; see loadtest/README.md)")
    o = common.add_argument_group("output")
    o.add_argument("--profile", action="store_true", default=None, help="py-spy the first gateway during the run")
    o.add_argument("--out", dest="out_root", type=Path, help="results root (default loadtest/results)")
    o.add_argument("--seed", type=int)
    o.add_argument("--keep-data", action="store_true", default=None, help="keep started gateways' data dirs")

    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    sub = parser.add_subparsers(dest="scenario", required=True)
    for name, text in HELP.items():
        sub.add_parser(name, parents=[common], help=text, description=text)
    return parser


def options_for(scenario: str, args: argparse.Namespace) -> Options:
    given = {k: v for k, v in vars(args).items() if v is not None and k != "scenario"}
    given["gateway_env"] = dict(given.get("gateway_env", []))
    return Options(scenario=scenario, **{**SCENARIO_DEFAULTS[scenario], **given})


def run_one(options: Options) -> bool:
    run = asyncio.run(execute(options))
    page = report.write_all(run.result, run.private, run.out_dir)
    print(report.summary_text(run.result, page), flush=True)
    return all(c["ok"] is not False for c in run.result["checks"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scenario == "calibrate":
        print(orjson.dumps(calibrate(min(args.readers or 2000, 15000)), option=orjson.OPT_INDENT_2).decode())
        return 0
    if args.scenario == "all":
        if not args.start_embedded and not args.start_distributed and not args.gateways:
            args.start_embedded = 1
        scenarios = ["fanout", "hot"]
    else:
        scenarios = [args.scenario]
    passed = [run_one(options_for(name, args)) for name in scenarios]
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
