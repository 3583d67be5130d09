"""The faults, one at a time: each strikes, leaves the deployment degraded for a while, and heals.

A fault calls ``ctx.strike()`` at the instant it breaks something: recovery times are measured
from there. It returns once the component is back (healthy by ``ha.sh``'s own checks).
"""
from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from loadtest.chaos.deployment import Deployment


@dataclass
class FaultContext:
    deployment: Deployment
    hot_article: str
    down_s: float
    stall_s: float
    window_s: float
    on_strike: Callable[[float], None]
    wait_for_hot_update: Callable[[float], Awaitable[bool]]
    struck_at: float | None = None
    notes: list[str] = field(default_factory=list)

    def strike(self) -> float:
        self.struck_at = time.time()
        self.on_strike(self.struck_at)
        return self.struck_at


@dataclass
class FaultOutcome:
    victim: str
    restart_s: float | None  # how long bringing it back took (ha.sh start/up), None if not restarted


async def _kill_and_restart(ctx: FaultContext, victim: str) -> FaultOutcome:
    ctx.strike()
    pid = ctx.deployment.signal(victim, signal.SIGKILL)
    await ctx.deployment.wait_gone(victim, pid)
    await asyncio.sleep(ctx.down_s)
    began = time.monotonic()
    await ctx.deployment.ha("start", victim)
    return FaultOutcome(victim, time.monotonic() - began)


async def baseline(ctx: FaultContext) -> FaultOutcome:
    """No fault: the steady state the others are compared with."""
    ctx.strike()
    await asyncio.sleep(ctx.down_s)
    return FaultOutcome("-", None)


async def gateway_kill(ctx: FaultContext) -> FaultOutcome:
    """kill -9 of a gateway: its readers and clappers must move to the other one."""
    return await _kill_and_restart(ctx, "gateway1")


async def worker_kill(ctx: FaultContext) -> FaultOutcome:
    """kill -9 of the Faust worker that owns the busy partition, half-way through a window."""
    partition = await ctx.deployment.partition_of(ctx.hot_article)
    victim = ctx.deployment.worker_owning(partition)
    if victim is None:
        victim = "processor1"
        ctx.notes.append(f"no worker reported partition {partition}; killed processor1")
    # A window closes when a total is announced: strike half a window after one arrives.
    if not await ctx.wait_for_hot_update(10):
        ctx.notes.append("no total of the busy article within 10 s before the kill")
    await asyncio.sleep(ctx.window_s / 2)
    return await _kill_and_restart(ctx, victim)


async def projector_kill(ctx: FaultContext) -> FaultOutcome:
    """kill -9 of a projector: the other takes its partitions over."""
    return await _kill_and_restart(ctx, "projector1")


async def leader_kill(ctx: FaultContext) -> FaultOutcome:
    """kill -9 of the broker leading the busy clap partition."""
    partition = await ctx.deployment.partition_of(ctx.hot_article)
    leader = (await ctx.deployment.partition_leaders(ctx.deployment.clap_topic))[partition]
    ctx.notes.append(f"partition {partition} led by broker {leader}")
    return await _kill_and_restart(ctx, f"kafka{leader}")


async def controller_kill(ctx: FaultContext) -> FaultOutcome:
    """kill -9 of the active KRaft controller (a broker too: every node has both roles)."""
    controller = await ctx.deployment.active_controller()
    ctx.notes.append(f"active controller: node {controller}")
    return await _kill_and_restart(ctx, f"kafka{controller}")


async def cassandra_kill(ctx: FaultContext) -> FaultOutcome:
    """kill -9 of one Cassandra node: QUORUM (2 of 3) still reads and writes."""
    return await _kill_and_restart(ctx, "cassandra2")


async def broker_stall(ctx: FaultContext) -> FaultOutcome:
    """SIGSTOP of the busy partition's leader for ``stall_s``: alive to the OS, silent to all."""
    partition = await ctx.deployment.partition_of(ctx.hot_article)
    leader = (await ctx.deployment.partition_leaders(ctx.deployment.clap_topic))[partition]
    victim = f"kafka{leader}"
    ctx.notes.append(f"partition {partition} led by broker {leader}; stopped for {ctx.stall_s:.0f} s")
    ctx.strike()
    ctx.deployment.signal(victim, signal.SIGSTOP)
    try:
        await asyncio.sleep(ctx.stall_s)
    finally:
        ctx.deployment.signal(victim, signal.SIGCONT)
    return FaultOutcome(victim, None)


async def full_restart(ctx: FaultContext) -> FaultOutcome:
    """Everything stopped (SIGTERM, by pid), then started again from what is on disk."""
    ctx.strike()
    began = time.monotonic()
    await ctx.deployment.ha("down", timeout_s=300)
    await ctx.deployment.ha("up", timeout_s=900)
    return FaultOutcome("everything", time.monotonic() - began)


FAULTS: dict[str, Callable[[FaultContext], Awaitable[FaultOutcome]]] = {
    "baseline": baseline,
    "gateway-kill": gateway_kill,
    "worker-kill": worker_kill,
    "projector-kill": projector_kill,
    "leader-kill": leader_kill,
    "controller-kill": controller_kill,
    "cassandra-kill": cassandra_kill,
    "broker-stall": broker_stall,
    "full-restart": full_restart,
}
