"""The scenarios: fanout, hot, platform and ingest, each a sequence of phases over the same tools.

A reader phase is always: connect the readers (and wait until each has its first total),
optionally drive traffic between a ``start`` and an ``end`` mark, let the system settle until
every reader shows the total the gateway reports (or a timeout), then collect. All times are
Unix wall-clock seconds on this host, shared by the gateway, readers and clappers.
"""
from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig
from loadtest import analysis
from loadtest.articles import ArticleMix, run_prefix
from loadtest.calibrate import calibrate
from loadtest.clap_latency import EXACT, LOWER, UPPER
from loadtest.clappers import ClapperFleet, ClapPlan, Ledger
from loadtest.freshness import DURABLE_AGE, GATEWAY_AGE, GATEWAY_APPEND, PROJECTOR_METRICS_URL, FreshnessProbe
from loadtest.httpclient import HttpError, fetch_totals, request_body, request_json
from loadtest.live_totals import LiveTotals
from loadtest.live_totals import follow as follow_live
from loadtest.live_totals import summary as live_summary
from loadtest.procmon import ProcMonitor, all_processes_cpu, busiest_between
from loadtest.plans import ReaderPlan, Target
from loadtest.readers import ReaderFleet
from loadtest.services import (EMBEDDED_ADMIN_TOKEN, ManagedProcess, publish_articles_to_topic,
                               publish_articles_with_admin, start_baseline, start_distributed_gateway,
                               start_embedded_gateway, start_py_spy, start_reference, summarize_collapsed)

DEFAULT_SOURCE_IPS = 8
CLAP_TAIL_S = 2.0
# After the clappers stop, the totals are read this often until they have held still this long;
# the articles of the run are read from the start if there are no more than this many of them.
SETTLE_POLL_S = 0.1
SETTLE_STILL_S = 1.0
SETTLE_WATCHED_MOST = 200


@dataclass
class Options:
    scenario: str
    readers: int = 1000
    duration_s: float = 10.0
    clap_rate: float = 1000.0
    articles: int = 1
    hot_share: float = 1.0
    gateways: list[str] = field(default_factory=list)
    gateway_pids: list[int] = field(default_factory=list)
    start_embedded: int = 0  # how many embedded gateways to start (0: use --gateway)
    start_distributed: int = 0  # how many distributed gateways to start against `make up` services
    gateway_env: dict[str, str] = field(default_factory=dict)
    window_ms: int | None = None
    baseline_interval_ms: float | None = None  # fanout: the baseline's tick; None: the gateway's window
    reader_procs: int | None = None
    clapper_procs: int = 1
    source_ips: int = DEFAULT_SOURCE_IPS
    connect_concurrency: int = 96
    connect_timeout_s: float = 120.0
    settle_timeout_s: float = 20.0
    hold_s: float = 5.0
    click_rate: float = 8.0
    batch_ms: float = 250.0
    articles_per_session: int = 1
    overclap_share: float = 0.05
    clap_count: int = 0  # 1: every tap is its own clap of count 1; 0: taps batched per --batch-ms
    reference: bool = True  # hot: measure the Node reference first, same readers, rate and generator
    close_sessions_at_end: bool = False
    profile: bool = False
    out_root: Path = Path(__file__).parent / "results"
    seed: int = 1
    keep_data: bool = False

    def reader_processes(self) -> int:
        if self.reader_procs:
            return self.reader_procs
        return max(1 if self.readers < 1000 else 2, math.ceil(self.readers / 8000))


Driver = Callable[[ReaderFleet], Awaitable[dict[str, Any]]]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Run:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.out_dir = options.out_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{options.scenario}"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.monitor = ProcMonitor()
        self.managed: list[ManagedProcess] = []
        self.prefix = run_prefix()
        self.result: dict[str, Any] = {
            "scenario": options.scenario,
            "started_at": time.time(),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
            "article_prefix": self.prefix,
            "phases": {},
            "checks": [],
        }
        self.private: dict[str, Any] = {}  # histograms and raw lists for the plots, not the JSON
        self.noise: list[list[dict[str, Any]]] = []  # other processes busy during measured windows

    # -- servers -------------------------------------------------------------------------------

    async def gateway_targets(self, env: dict[str, str]) -> list[Target]:
        """Start embedded gateways, or use the ones given; their pids go to the monitor."""
        if self.options.start_embedded:
            targets = []
            for i in range(self.options.start_embedded):
                say(f"starting embedded gateway {i} with {env or 'default settings'}")
                process = await start_embedded_gateway(self.out_dir / f"gateway-{i}", env, keep_data=self.options.keep_data)
                self.managed.append(process)
                self.monitor.watch(f"gateway-{i}", process.pid)
                targets.append(Target.from_url(process.base_url))
            self.result["gateway_env"] = {**self.managed[0].env, "CLAP_DATA_DIR": "(temporary)"}
            return targets
        if self.options.start_distributed:
            # Gateway settings that only an embedded gateway acts on (its own processing window)
            # do not apply: in distributed mode the processor's window sets the update rate.
            targets = []
            started = []
            try:
                for i in range(self.options.start_distributed):
                    say(f"starting distributed gateway gw-{i + 1} with {env or 'default settings'}")
                    process = await start_distributed_gateway(self.out_dir / f"gateway-{i}", env, name=f"gw-{i + 1}")
                    self.managed.append(process)
                    started.append(process)
                    say(f"gw-{i + 1}: pid {process.pid} on {process.base_url}")
                    self.monitor.watch(f"gateway-{i}", process.pid)
                    targets.append(Target.from_url(process.base_url))
            except BaseException:
                await self.stop_servers()
                raise
            self.result["gateway_env"] = started[0].env
            self.result["gateway_pids"] = [p.pid for p in started]
            return targets
        if not self.options.gateways:
            raise SystemExit("give --gateway URL (repeatable) or --start-embedded")
        for i, pid in enumerate(self.options.gateway_pids):
            self.monitor.watch(f"gateway-{i}", pid)
        return [Target.from_url(url) for url in self.options.gateways]

    async def register_articles(self, targets: list[Target], mix: ArticleMix) -> None:
        """Publish the run's articles: gateways take joins and claps only for published ones.
        Started embedded gateways (or given ones, with CLAP_ADMIN_TOKEN set) through the admin
        endpoint; otherwise to the articles topic, as the platform does."""
        ids = [mix.article_id(index) for index in range(mix.articles)]
        bases = [target.http_base for target in targets]
        admin_token = EMBEDDED_ADMIN_TOKEN if self.options.start_embedded else os.environ.get("CLAP_ADMIN_TOKEN")
        if admin_token and not self.options.start_distributed:
            say(f"publishing {len(ids)} articles through the admin endpoint of {len(bases)} gateway(s)")
            await publish_articles_with_admin(bases, ids, admin_token)
        else:
            say(f"publishing {len(ids)} articles to the articles topic")
            await publish_articles_to_topic(bases, ids)

    async def stop_servers(self) -> None:
        for process in reversed(self.managed):
            say(f"stopping {process.name} pid {process.pid}")
            await process.stop()
        self.managed.clear()

    # -- one phase with readers ----------------------------------------------------------------

    def reader_plan(self, targets: list[Target], mix: ArticleMix) -> ReaderPlan:
        o = self.options
        processes = o.reader_processes()
        return ReaderPlan(
            targets=tuple(targets),
            mix=mix,
            readers=o.readers,
            processes=processes,
            source_ips=tuple(f"127.0.0.{2 + i}" for i in range(o.source_ips)),
            connect_concurrency=max(4, o.connect_concurrency // processes),
            connect_timeout_s=o.connect_timeout_s,
            max_lifetime_s=o.connect_timeout_s + o.duration_s + o.hold_s + o.settle_timeout_s + 300,
            log_frames=o.scenario == "hot",
        )

    async def reader_phase(self, label: str, plan: ReaderPlan, server_labels: list[str], drive: Driver) -> dict[str, Any]:
        say(f"{label}: {plan.readers} readers in {plan.processes} processes -> {len(plan.targets)} server(s)")
        self.monitor.sample_once()
        before = time.time()
        fleet = ReaderFleet(plan)
        fleet.start()
        for i, pid in enumerate(fleet.pids):
            self.monitor.watch(f"{label}-readers-{i}", pid)
        try:
            connected = await self._connect(fleet, label)
            await asyncio.sleep(1.0)  # let RSS settle after the ramp before calling it "connected"
            self.monitor.sample_once()
            t_connected = time.time()
            driven = await drive(fleet)
            say(f"{label}: collecting reader results (and timing every clap to every reader)")
            results = await fleet.finish(driven.pop("_claps", None))
        finally:
            fleet.stop()
        start, end = driven["start"], driven["end"]
        readers = analysis.summarize_readers(results, start, end)
        self.private[label] = {"latency": readers.pop("_latency_histogram"), "rates": readers.pop("_rates"),
                               "ramp": fleet.progress_series,
                               "per_clap": {m: v.pop("_histogram") for m, v in readers["per_clap_latency_ms"].items()}}
        phase: dict[str, Any] = {
            "window": {"start": start, "end": end, "seconds": round(end - start, 3)},
            "connect": {**connected, "seconds": round(t_connected - before - 1.0, 2)},
            "readers": readers,
            "servers": {s: analysis.gateway_resources(self.monitor, s, before, t_connected, start, end)
                        for s in server_labels if s in self.monitor.series},
            "machine_busy_share": self.monitor.machine_busy(start, end),
            **{k: v for k, v in driven.items() if k not in ("start", "end")},
        }
        self.result["phases"][label] = phase
        return phase

    async def _connect(self, fleet: ReaderFleet, label: str) -> dict[str, int]:
        last_print = [0.0]

        def progress(totals: dict[str, int]) -> None:
            if time.monotonic() - last_print[0] > 3:
                last_print[0] = time.monotonic()
                say(f"{label}: connected {totals['connected']}/{fleet.plan.readers} "
                    f"failed {totals['failed']} first totals {totals['snapshots']}")

        totals = await fleet.wait_connected(self.options.connect_timeout_s, progress)
        say(f"{label}: connected {totals['connected']}, failed {totals['failed']}")
        return totals

    # -- drivers -------------------------------------------------------------------------------

    def baseline_driver(self, server: ManagedProcess, tick_ms: float) -> Driver:
        o = self.options

        async def drive(fleet: ReaderFleet) -> dict[str, Any]:
            await request_json("POST", f"{server.base_url}/broadcast?seconds={o.duration_s}"
                                       f"&interval_ms={tick_ms}")
            start, end, _ = await self._mark_window(fleet, time.time(), o.duration_s)
            await asyncio.sleep(2.0)  # frames still in socket buffers are delivered, not lost
            stats = await request_json("GET", f"{server.base_url}/stats")
            return {"start": start, "end": end, "server_stats": stats,
                    "other_processes_busy": self.noise[-1] if self.noise else []}

        return drive

    def clap_driver(self, targets: list[Target], mix: ArticleMix, *, independent: bool) -> Driver:
        o = self.options

        async def drive(fleet: ReaderFleet | None) -> dict[str, Any]:
            articles = [mix.hot] if mix.articles == 1 else [mix.article_id(i) for i in range(mix.articles)]
            # hot times every clap of the window; the at-based bound needs later claps after each,
            # so tapping goes on a little past the measured window.
            tail_s = CLAP_TAIL_S if o.scenario == "hot" else 0.0
            initial = await self.read_totals(targets, articles if len(articles) <= 50 else [], independent)
            freshness = FreshnessProbe([f"{t.http_base}/metrics" for t in targets],
                                       PROJECTOR_METRICS_URL if o.start_distributed else None)
            await freshness.start()
            # Without readers the settle reads the durable copy; the fan-out topic says when the
            # totals readers are sent were final.
            live, following = None, None
            if o.scenario == "ingest" and o.start_distributed and not independent:
                live, started = LiveTotals(), asyncio.Event()
                following = asyncio.ensure_future(follow_live(KAFKA_BOOTSTRAP, COUNTS_TOPIC, live, started))
                try:
                    await asyncio.wait_for(started.wait(), 30)
                except BaseException:
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                    raise
            plan = ClapPlan(
                targets=tuple(targets), mix=mix, rate=o.clap_rate, duration_s=o.duration_s + tail_s,
                start_at=time.time() + 3.0, click_rate=o.click_rate, batch_ms=o.batch_ms,
                articles_per_session=o.articles_per_session, overclap_share=o.overclap_share,
                close_at_end=o.close_sessions_at_end, processes=o.clapper_procs, seed=o.seed,
                one_per_message=o.clap_count == 1,
            )
            say(f"clapping: {plan.clappers} clappers, {o.clap_rate:g} taps/s for {o.duration_s:g}s, "
                + ("each tap its own clap of count 1" if plan.one_per_message else f"batches every {o.batch_ms:g} ms"))
            clappers = ClapperFleet(plan)
            for i, pid in enumerate(clappers.start()):
                self.monitor.watch(f"clappers-{i}", pid)
            # Clappers spread their first sends over two batch intervals; rates are measured once
            # all of them tap, until they stop.
            ramp = 2 * o.batch_ms / 1000
            start, end, profile = await self._mark_window(fleet, plan.start_at + ramp, o.duration_s - ramp)
            room_metrics = await gateway_room_metrics(targets) if o.scenario == "hot" else {}
            watched = articles if len(articles) <= SETTLE_WATCHED_MOST else []
            try:
                ledger, convergence, finals = await self.settle(fleet, targets, clappers.result(), watched, end,
                                                                independent, initial)
            finally:
                if following is not None:
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
            out = {
                "start": start, "end": end,
                "other_processes_busy": self.noise[-1] if self.noise else [],
                "clappers": analysis.summarize_ledger(ledger, start, end),
                "convergence": convergence,
                "totals_vs_acks": analysis.check_totals(ledger, finals, initial),
                "count_age": await freshness.result(),
                "_claps": ledger.claps_for_readers(start, end),
            }
            if live is not None:
                out["live_totals"] = live_summary(live, finals, end)
            if room_metrics:
                out["room_metrics"] = room_metrics
            if profile is not None:
                out["gateway_profile"] = await self._finish_profile(profile)
            return out

        return drive

    async def _mark_window(self, fleet: ReaderFleet | None, start_at: float, duration_s: float
                           ) -> tuple[float, float, tuple[Any, Path] | None]:
        """Mark start and end of the measured window; profile the gateway in between if asked."""
        await asyncio.sleep(max(0.0, start_at - time.time()))
        start = fleet.mark("start") if fleet else time.time()
        profile = self._maybe_profile(duration_s)
        before = all_processes_cpu()
        await asyncio.sleep(max(0.0, start_at + duration_s - time.time()))
        end = fleet.mark("end") if fleet else time.time()
        self.noise.append(busiest_between(before, all_processes_cpu(), end - start, self.monitor.own_pids()))
        return start, end, profile

    def _maybe_profile(self, seconds: float) -> tuple[Any, Path] | None:
        if not self.options.profile or "gateway-0" not in self.monitor.series:
            return None
        out = self.out_dir / "gateway-profile.txt"
        popen = start_py_spy(self.monitor.series["gateway-0"].pid, seconds, out)
        if popen is None:
            say("--profile: py-spy is not installed in this venv (pip install py-spy); skipping")
            return None
        return popen, out

    async def _finish_profile(self, profile: tuple[Any, Path]) -> dict[str, Any]:
        popen, out = profile
        await asyncio.to_thread(popen.wait, 60)
        return {"collapsed_stacks": out.name, **summarize_collapsed(out)}

    # -- settling and totals -------------------------------------------------------------------

    async def read_totals(self, targets: list[Target], articles: list[str], independent: bool) -> dict[str, int]:
        """Article -> total: from the first gateway (shared store) or summed (independent ones)."""
        asked = targets if independent else targets[:1]
        totals: dict[str, int] = {}
        for per_target in await asyncio.gather(*(fetch_totals(t.http_base, articles) for t in asked)):
            for article, total in per_target.items():
                totals[article] = totals.get(article, 0) + total
        return totals

    async def settle(self, fleet: ReaderFleet | None, targets: list[Target], ledger: Awaitable[Ledger],
                     watched: list[str], end: float, independent: bool, initial: dict[str, int]
                     ) -> tuple[Ledger, dict[str, Any], dict[str, int]]:
        """Read the totals from the end of the window on until they stop moving and every reader
        shows its gateway's total; returns the clappers' ledger, how the totals converged and
        the final totals.

        The totals are read every ``SETTLE_POLL_S`` from ``end`` while the clappers finish
        (``watched``: the articles to read until the ledger says which were tapped), so that
        ``settle_seconds_after_end`` is when they reached their final values (to within one
        read of them all), and ``confirmed_seconds_after_end`` when they had held still for
        ``SETTLE_STILL_S``: that is when this method returns. Holding still is not enough while
        the totals disagree with the acks (a stalled pipeline holds still too): once the ledger
        is in, the reads must also agree with it (``analysis.totals_agree``; not for independent
        gateways, each of which holds only its own claps), or the wait goes on until the timeout
        and the run reports the mismatch. 2026-12-03's `173501` ingest run stopped 0.78 s after
        the end on totals that held still for 1.5 s with a quarter of the claps not yet in them.
        """
        deadline = time.monotonic() + self.options.settle_timeout_s
        books = asyncio.ensure_future(ledger)
        polls: list[tuple[float, dict[tuple[int, str], int], bool]] = []
        articles, tapped = watched, None
        convergence: dict[str, Any] = {}
        stable = False
        while True:
            if tapped is None and books.done():
                tapped = sorted(books.result().tapped)
                if not set(tapped) <= set(watched):
                    articles = tapped
                    polls.clear()  # other articles: what was read before says nothing of these
            # Readers are checked against their own gateway's total; without them one gateway's
            # answer is the store's (unless the gateways are independent stores), for 1/G of the reads.
            asked = targets if fleet is not None or independent else targets[:1]
            per_target = await self._totals_per_target(asked, articles)
            if fleet is not None:
                convergence = await fleet.convergence(per_target)
            polls.append((time.time(), per_target, bool(convergence.get("behind"))))
            still_since = analysis.settled_at(polls)
            stable = (tapped is not None and still_since is not None
                      and polls[-1][0] - still_since >= SETTLE_STILL_S
                      and (independent or analysis.totals_agree(books.result(), per_target, initial)))
            if stable or time.monotonic() > deadline:
                break
            await asyncio.sleep(SETTLE_POLL_S)
        convergence["converged"] = bool(stable)
        # Lost = readers that did not end on their gateway's final total (or were dropped before
        # the end). Skipped seqs are reported apart: conflating to the newest absolute total is
        # by design and loses no claps.
        if fleet is not None:
            convergence["lost_readers"] = int(convergence.get("behind") or 0)
        reached = still_since if stable else None
        convergence["settle_seconds_after_end"] = round((reached if reached is not None else time.time()) - end, 2)
        convergence["confirmed_seconds_after_end"] = round(time.time() - end, 2)
        convergence["settle_reads_done_at_s"] = [round(at - end, 2) for at, _, _ in polls][-40:]
        finals = await self.read_totals(targets, tapped if tapped is not None else articles, independent)
        say(f"settled: {convergence}")
        return await books, convergence, finals

    async def _totals_per_target(self, targets: list[Target], articles: list[str]) -> dict[tuple[int, str], int]:
        """(target, article) -> total, -1 where that target did not answer."""
        async def one(index: int, target: Target) -> dict[tuple[int, str], int]:
            try:
                totals = await fetch_totals(target.http_base, articles)
            except (OSError, HttpError, TimeoutError):
                return {(index, a): -1 for a in articles}
            return {(index, a): totals[a] for a in articles}

        per_target: dict[tuple[int, str], int] = {}
        for part in await asyncio.gather(*(one(i, t) for i, t in enumerate(targets))):
            per_target.update(part)
        return per_target

    # -- checks --------------------------------------------------------------------------------

    def check(self, name: str, value: Any, target: str, ok: bool | None) -> None:
        self.result["checks"].append({"check": name, "value": value, "target": target, "ok": ok})


# -- the scenarios -------------------------------------------------------------------------------


async def fanout(run: Run) -> None:
    """10,000 readers of one article: delivered frames/s from the gateway vs a bare broadcast."""
    o = run.options
    mix = ArticleMix(run.prefix, 1, 1.0)
    # Both servers are offered the same totals: the gateway one per window (the product's
    # 100 ms; under `make up` the processor's, of the same default), the baseline one per tick.
    window = o.window_ms if o.window_ms is not None else GatewayConfig.window_ms
    tick = o.baseline_interval_ms if o.baseline_interval_ms is not None else float(window)
    say("calibrating: raw socket.send of one frame to each of 2,000 loopback sockets")
    run.result["calibration"] = await asyncio.to_thread(calibrate, min(2000, o.readers))
    say(f"calibration: {run.result['calibration']}")
    baseline = await start_baseline(run.out_dir)
    run.managed.append(baseline)
    run.monitor.watch("baseline", baseline.pid)
    try:
        base = await run.reader_phase("baseline", run.reader_plan([Target(
            "127.0.0.1", int(baseline.base_url.rsplit(":", 1)[1]), "/")], mix), ["baseline"], run.baseline_driver(baseline, tick))
    finally:
        await baseline.stop()
        run.managed.remove(baseline)
    env = {"CLAP_WINDOW_MS": str(window), **o.gateway_env}
    if o.start_distributed and o.window_ms is None:
        env.pop("CLAP_WINDOW_MS")  # the processor's window (CLAP_WINDOW_MS of `make up`, 100 ms) applies
    gate = await _clapped_gateway_phase(run, mix, env)
    b = base["readers"]["frames_per_second"]["median_per_s"]
    g = gate["readers"]["frames_per_second"]["median_per_s"]
    ratio = round(g / b, 3) if b and g is not None else None
    # Per core: both servers are single processes offered the same updates, so when both keep up
    # the frames delivered are alike and what differs is the CPU each spent on them.
    g_cores, b_cores = analysis.server_cores(gate), analysis.server_cores(base)
    g_per_core = g / g_cores if g and g_cores else None
    b_per_core = b / b_cores if b and b_cores else None
    per_core_ratio = round(g_per_core / b_per_core, 3) if g_per_core and b_per_core else None
    run.result["fanout_ratio"] = {
        "gateway_frames_per_s_median": g, "baseline_frames_per_s_median": b, "ratio": ratio,
        "gateway_frames_per_core_s": g_per_core and round(g_per_core), "baseline_frames_per_core_s": b_per_core and round(b_per_core),
        "per_core_ratio": per_core_ratio, "gateway_taps_per_s": o.clap_rate,
        "gateway_window_ms": window, "baseline_tick_ms": tick,
    }
    cost = {"baseline": _cpu_per_frame_us(base, b), "gateway": _cpu_per_frame_us(gate, g)}
    run.result["fanout_ratio"]["cpu_us_per_frame"] = cost
    run.check("gateway/baseline delivered frames/s (medians)", ratio, "report", None)
    run.check(f"gateway/baseline frames per CPU-second of the server process (the gateway also taking "
              f"{o.clap_rate:,.0f} taps/s)", per_core_ratio, ">= 1.2", per_core_ratio is not None and per_core_ratio >= 1.2)
    run.check("CPU µs per frame, user space + kernel: baseline; gateway",
              "; ".join(f"{c['user']} + {c['kernel']}" if c else "-" for c in cost.values()), "report", None)
    _reader_checks(run, gate, strict=False)


def _cpu_per_frame_us(phase: dict[str, Any], frames_per_s: float | None) -> dict[str, float] | None:
    """The server's CPU per delivered frame, split into user space and the kernel's part.

    On loopback the kernel's part is most of a frame's cost in any server; the user-space part
    is what a server's own code changes directly.
    """
    cores, kernel = analysis.server_cores(phase), analysis.server_cores(phase, "cpu_kernel_cores_during_run")
    if not frames_per_s or not cores:
        return None
    return {"user": round((cores - kernel) / frames_per_s * 1e6, 2), "kernel": round(kernel / frames_per_s * 1e6, 2)}


async def hot(run: Run) -> None:
    """10,000 readers of one article while clappers tap 1,000 claps/s; the Node reference first."""
    o = run.options
    mix = ArticleMix(run.prefix, 1, 1.0)
    reference = await _reference_phase(run, mix) if o.reference else None
    env = {**({"CLAP_WINDOW_MS": str(o.window_ms)} if o.window_ms is not None else {}), **o.gateway_env}
    phase = await _clapped_gateway_phase(run, mix, env)
    _reader_checks(run, phase, strict=True)
    if reference is not None:
        _compare_with_reference(run, reference, phase)


async def _reference_phase(run: Run, mix: ArticleMix) -> dict[str, Any]:
    """The same readers, rate and generator against the in-memory Node server of our contract."""
    o = run.options
    say("starting the reference (loadtest/reference/server.js, Node + ws, in memory)")
    server = await start_reference(run.out_dir, window_ms=o.window_ms or 100)
    run.managed.append(server)
    run.monitor.watch("reference", server.pid)
    target = Target.from_url(server.base_url)
    try:
        return await run.reader_phase("reference", run.reader_plan([target], mix), ["reference"],
                                      run.clap_driver([target], mix, independent=False))
    finally:
        await server.stop()
        run.managed.remove(server)


async def gateway_room_metrics(targets: list[Target]) -> dict[str, dict[str, float]]:
    """The fan-out's own view at the end of the window (gateway /metrics): each large room's
    cadence and the pass-time histogram. Servers without /metrics (the reference) give nothing."""
    found: dict[str, dict[str, float]] = {}
    for index, target in enumerate(targets):
        try:
            text = (await request_body("GET", f"{target.http_base}/metrics")).decode()
        except (OSError, HttpError, TimeoutError):
            continue
        lines = [line.split(" ") for line in text.splitlines() if line.startswith("gateway_room_")]
        values = {name: float(value) for name, value in lines}
        if values:
            found[f"gateway-{index}"] = values
    return found


def headline_method(*phases: dict[str, Any]) -> str | None:
    """The per-clap method every phase has: exact where every ack carried seq, else the upper bound."""
    have = [set(p["readers"]["per_clap_latency_ms"]) for p in phases]
    for method in (EXACT, UPPER):
        if all(method in h for h in have):
            return method
    return None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator is not None and denominator else None


P99_RATIO_EMBEDDED = 1.3
P99_RATIO_DISTRIBUTED = 1.5

# A phase offered less than this share of the planned clap rate was not under the same load.
OFFERED_SHARE_LEAST = 0.97


def _offer_check(run: Run, label: str, phase: dict[str, Any], *, judged: bool) -> None:
    """What the clappers offered against the plan, and why they fell short if they did: taps not
    made up after a late look, and how long new users waited for a session and a websocket."""
    clappers = phase.get("clappers")
    if not clappers:
        return
    offered = clappers["taps_per_second"].get("median_per_s")
    plan = run.options.clap_rate
    post, connect = clappers.get("session_post_ms", {}), clappers.get("session_connect_ms", {})
    run.check(f"{label}: taps/s offered, median (taps not made up; new session POST / connect p99 ms)",
              f"{offered} of {plan:g} ({clappers.get('taps_not_made_up', 0):,}; "
              f"{post.get('p99')} / {connect.get('p99')})",
              f">= {OFFERED_SHARE_LEAST * plan:g}",
              (offered is not None and offered >= OFFERED_SHARE_LEAST * plan) if judged else None)


def _compare_with_reference(run: Run, reference: dict[str, Any], gateway: dict[str, Any]) -> None:
    """The gateway's figures beside the reference's, and as ratios, within this one run."""
    # Like for like, or the ratios mean nothing: both phases offered the plan.
    _offer_check(run, "reference", reference, judged=True)
    _offer_check(run, "gateway", gateway, judged=True)
    method = headline_method(reference, gateway)
    rows: dict[str, Any] = {"method": method}
    for label, phase in (("reference", reference), ("gateway", gateway)):
        readers = phase["readers"]
        clap = readers["per_clap_latency_ms"].get(method or "", {})
        rates = readers["per_reader_updates_per_s"]
        rows[label] = {
            "per_clap_p50_ms": clap.get("p50"), "per_clap_p99_ms": clap.get("p99"),
            "per_clap_pairs": clap.get("pairs"), "per_clap_never": clap.get("never"),
            "updates_per_reader_p50": rates.get("p50"), "updates_per_reader_min": rates.get("p0"),
            "per_update_p99_ms": readers["latency_ms"].get("p99"),
            "bracket_p99_ms": {m: readers["per_clap_latency_ms"].get(m, {}).get("p99") for m in (EXACT, UPPER, LOWER)},
        }
    ref, gw = rows["reference"], rows["gateway"]
    rows["ratios"] = {
        "per_clap_p50": _ratio(gw["per_clap_p50_ms"], ref["per_clap_p50_ms"]),
        "per_clap_p99": _ratio(gw["per_clap_p99_ms"], ref["per_clap_p99_ms"]),
        "updates_per_reader_p50": _ratio(gw["updates_per_reader_p50"], ref["updates_per_reader_p50"]),
        "updates_per_reader_min": _ratio(gw["updates_per_reader_min"], ref["updates_per_reader_min"]),
    }
    run.result["versus_reference"] = rows
    say(f"versus the reference: {rows}")
    ratios = rows["ratios"]
    run.check(f"per-clap latency p50 / p99 ms, reference ({method})",
              f"{ref['per_clap_p50_ms']} / {ref['per_clap_p99_ms']}", "report", None)
    run.check(f"per-clap latency p50 / p99 ms, gateway ({method})",
              f"{gw['per_clap_p50_ms']} / {gw['per_clap_p99_ms']}", "report", None)
    # Issue 10's bounds: a gateway that counts in-process gets 1.3x the reference's p99; one that
    # waits on Kafka both ways (the clap log, then the processor's totals) gets 1.5x.
    bound = P99_RATIO_DISTRIBUTED if run.options.start_distributed else P99_RATIO_EMBEDDED
    run.check("per-clap latency p99, gateway / reference", ratios["per_clap_p99"], f"<= {bound}",
              ratios["per_clap_p99"] is not None and ratios["per_clap_p99"] <= bound)
    run.check("updates/s per reader p50: reference / gateway",
              f"{ref['updates_per_reader_p50']} / {gw['updates_per_reader_p50']}", "report", None)
    run.check("updates/s per reader p50, gateway / reference", ratios["updates_per_reader_p50"], ">= 0.9",
              ratios["updates_per_reader_p50"] is not None and ratios["updates_per_reader_p50"] >= 0.9)


async def _clapped_gateway_phase(run: Run, mix: ArticleMix, env: dict[str, str]) -> dict[str, Any]:
    """Readers on the gateway(s) while clappers tap; the servers are stopped afterwards."""
    targets = await run.gateway_targets(env)
    try:
        await run.register_articles(targets, mix)
        return await run.reader_phase("gateway", run.reader_plan(targets, mix),
                                      [f"gateway-{i}" for i in range(len(targets))],
                                      run.clap_driver(targets, mix, independent=False))
    finally:
        await run.stop_servers()


async def platform(run: Run) -> None:
    """Many connections over many articles across several gateways; idle memory and routing."""
    o = run.options
    mix = ArticleMix(run.prefix, max(1, o.articles), o.hot_share, cover_all=True, seed=o.seed)
    targets = await run.gateway_targets({**o.gateway_env})
    independent = o.start_embedded > 1  # embedded gateways do not share a store
    try:
        await run.register_articles(targets, mix)
    except BaseException:
        await run.stop_servers()
        raise

    async def hold_then_clap(fleet: ReaderFleet) -> dict[str, Any]:
        say(f"holding {o.readers} idle connections for {o.hold_s:g}s")
        await asyncio.sleep(o.hold_s)
        if o.clap_rate <= 0:
            now = time.time()
            return {"start": now - o.hold_s, "end": now}
        return await run.clap_driver(targets, mix, independent=independent)(fleet)

    try:
        phase = await run.reader_phase("platform", run.reader_plan(targets, mix),
                                       [f"gateway-{i}" for i in range(len(targets))], hold_then_clap)
    finally:
        await run.stop_servers()
    readers = phase["readers"]
    run.check("readers connected", readers["connected"], f"{o.readers}", readers["connected"] == o.readers)
    run.check("frames delivered to a room the reader did not join", readers["misrouted"], "0", readers["misrouted"] == 0)
    for label, server in phase["servers"].items():
        run.check(f"{label} RSS per idle connection (KB)", server.get("rss_kb_per_connection"), "report", None)
    if "convergence" in phase:
        run.check("readers converged to their gateway's totals", phase["convergence"]["converged"], "true",
                  phase["convergence"]["converged"])
        _totals_check(run, phase)


async def ingest(run: Run) -> None:
    """Clappers only: acked claps/s sustained, and acked claps against the final totals."""
    o = run.options
    mix = ArticleMix(run.prefix, max(1, o.articles), o.hot_share, seed=o.seed)
    targets = await run.gateway_targets({**o.gateway_env})
    try:
        await run.register_articles(targets, mix)
    except BaseException:
        await run.stop_servers()
        raise
    distributed = not o.start_embedded
    if distributed:
        _watch_deployment(run)
        before_offsets = await _claps_end_offsets()
    try:
        run.monitor.sample_once()
        driven = await run.clap_driver(targets, mix, independent=o.start_embedded > 1)(None)
    finally:
        await run.stop_servers()
    cpu = {label: run.monitor.cpu_share(label, driven["start"], driven["end"]) for label in run.monitor.series}
    driven["cpu_cores_by_process"] = {k: round(v, 3) for k, v in sorted(cpu.items()) if v is not None}
    if distributed and before_offsets is not None:
        # Same run, after the clappers stopped: a bare aiokafka consumer reads exactly the claps
        # of this run from the same topic. Its records/s is the consumer ceiling on this machine.
        from loadtest.kafka_baseline import consume_range
        after_offsets = await _claps_end_offsets()
        if after_offsets is not None:
            say("bare aiokafka consumer: reading this run's claps from the claps topic")
            driven["bare_consumer"] = await consume_range(KAFKA_BOOTSTRAP, "claps", before_offsets, after_offsets)
            say(f"bare consumer: {driven['bare_consumer']}")
    start, end = driven.pop("start"), driven.pop("end")
    driven["servers"] = {
        label: analysis.gateway_resources(run.monitor, label, start, start, start, end)
        for label in run.monitor.series if label.startswith("gateway-")
    }
    driven["window"] = {"start": start, "end": end, "seconds": round(end - start, 3)}
    driven["machine_busy_share"] = run.monitor.machine_busy(start, end)
    run.result["phases"]["ingest"] = driven
    acked = driven["clappers"]["acked_claps_per_second"]
    offered = driven["clappers"]["taps_per_second"]
    run.check("acked claps/s (median over seconds)", acked["median_per_s"], f"offered {offered['median_per_s']}", None)
    run.check("acked claps/s p5 over seconds", acked.get("p5"), "sustained: close to the median", None)
    if "bare_consumer" in driven:
        bare = driven["bare_consumer"]
        ratio = round(acked["median_per_s"] / bare["claps_per_s"], 4) if bare.get("claps_per_s") else None
        run.check("bare aiokafka consumer claps/s (records/s), same claps, same run",
                  f"{bare.get('claps_per_s')} ({bare.get('records_per_s')})", "report", None)
        run.check("acked claps/s median / bare consumer claps/s", ratio, "report", None)
    # The processor's sustained rate: every clap counted into the totals, over the time from the
    # start of the window until the totals settled (a processor that lags shows as a long settle).
    conv = driven.get("convergence", {})
    if conv.get("converged") and conv.get("settle_seconds_after_end") is not None:
        counted = driven["clappers"].get("claps_acked") or 0
        span = (end - start) + conv["settle_seconds_after_end"]
        driven["pipeline_counted_claps_per_s"] = round(counted / span, 1) if span > 0 else None
        run.check("claps counted into totals per s (window + settle)", driven["pipeline_counted_claps_per_s"],
                  f"settled {conv['settle_seconds_after_end']} s after the end", None)
    if "live_totals" in driven:
        live = driven["live_totals"]
        run.check("totals readers are sent (fan-out topic) final after the end, s (articles not final)",
                  f"{live['settle_seconds_after_end']} ({live['articles_not_final']})",
                  f"durable copy: {conv.get('settle_seconds_after_end')} s", None)
    run.check("CPU cores per process during the window", driven["cpu_cores_by_process"], "report", None)
    _offer_check(run, "ingest", driven, judged=False)
    _totals_check(run, driven)


KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
COUNTS_TOPIC = os.environ.get("COUNTS_TOPIC", "clap-counts")
RUN_DIR = Path(__file__).resolve().parent.parent / ".run"


def _watch_deployment(run: Run) -> None:
    """Sample the `make up` processes (pid files under .run/) too: where the time goes."""
    for name in ("kafka", "cassandra", "processor", "projector"):
        try:
            pid = int((RUN_DIR / f"{name}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if Path(f"/proc/{pid}").exists():
            run.monitor.watch(name, pid)


async def _claps_end_offsets() -> dict[int, int] | None:
    from loadtest.kafka_baseline import end_offsets
    try:
        return await end_offsets(KAFKA_BOOTSTRAP, "claps")
    except Exception as error:  # Kafka not there: an embedded run; no consumer baseline
        say(f"no Kafka at {KAFKA_BOOTSTRAP} ({error!r}): skipping the bare consumer baseline")
        return None


def _totals_check(run: Run, phase: dict[str, Any]) -> None:
    totals = phase["totals_vs_acks"]
    run.check("articles whose total disagrees with the acks", totals["mismatched"], "0", totals["mismatched"] == 0)
    for name, stage in ((GATEWAY_AGE, "at the gateways"), (DURABLE_AGE, "in Cassandra")):
        age = phase.get("count_age", {}).get(name)
        if age:
            run.check(f"count age p50 / p99 ms {stage} (a clap reaching a gateway to its total {stage})",
                      f"{age['p50_ms']} / {age['p99_ms']} ({age['totals']:,} totals)", "report", None)
    append = phase.get("count_age", {}).get(GATEWAY_APPEND)
    if append:
        run.check("clap append p50 / p99 ms at the gateways (handed to the clap log to durable there)",
                  f"{append['p50_ms']} / {append['p99_ms']} ({append['totals']:,} claps)", "report", None)


def _reader_checks(run: Run, phase: dict[str, Any], *, strict: bool) -> None:
    readers = phase["readers"]
    latency = readers["latency_ms"]
    rates = readers["per_reader_updates_per_s"]
    convergence = phase.get("convergence", {})
    target = run.options.readers
    run.check("readers connected", readers["connected"], f"{target}", readers["connected"] == target)
    run.check("readers converged to the final total", convergence.get("converged"), "true",
              convergence.get("converged") if strict else None)
    _totals_check(run, phase)
    lost = convergence.get("lost_readers")
    run.check("readers lost (not ending on the final total)", lost, "0", lost == 0 if strict else None)
    missed = readers.get("announcements_missed")
    if missed is not None:  # counted against what was announced: seqs may skip numbers by design
        run.check("announced totals a reader missed (conflated; by design)",
                  f"{missed['missed']} of {missed['announcements']} in {missed['readers_missing_some']} readers",
                  "report", None)
    else:
        run.check("seqs skipped (conflated for slow readers; by design)",
                  f"{readers['skipped']} in {readers['readers_with_skips']} readers", "report", None)
    run.check("out of order / duplicated", f"{readers['out_of_order']} / {readers['duplicates']}", "0 / 0",
              readers["out_of_order"] == 0 and readers["duplicates"] == 0)
    run.check("updates/s per reader: min (p1, p50)", f"{rates.get('p0')} ({rates.get('p1')}, {rates.get('p50')})",
              ">= 9", (rates.get("p0") or 0) >= 9 if strict else None)
    run.check("per-update latency p50 / p99 ms (receive - at of its newest clap)",
              f"{latency.get('p50')} / {latency.get('p99')}", "p99 <= 250",
              (latency.get("p99") or math.inf) <= 250 if strict else None)
    for method, clap in readers.get("per_clap_latency_ms", {}).items():
        run.check(f"per-clap latency p50 / p99 ms ({method}; pairs never reached)",
                  f"{clap.get('p50')} / {clap.get('p99')} ({clap['never']} of {clap['pairs']})", "report", None)
    run.check("connections closed by the server", readers["closed_unexpectedly"], "0", readers["closed_unexpectedly"] == 0)


SCENARIOS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "fanout": fanout, "hot": hot, "platform": platform, "ingest": ingest,
}


async def execute(options: Options) -> Run:
    run = Run(options)
    run.monitor.watch("orchestrator", os.getpid())
    run.monitor.start()
    try:
        await SCENARIOS[options.scenario](run)
    finally:
        await run.stop_servers()
        await run.monitor.stop()
        run.result["finished_at"] = time.time()
        run.result["monitor"] = run.monitor.to_json()
    return run
