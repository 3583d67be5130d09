"""The part of the fault suite (`make chaos`) that CI runs: a 3-broker Kafka (KRaft, RF 3, min ISR 2)
with 2 gateways, 2 Faust workers and a projector, started by deploy/local/ha.sh on free ports
next to the single-node services, over the CI Cassandra. Under steady load it kills a gateway
and then the leader of the busy clap partition, and the checker must find every acked clap
counted exactly once and every source agreeing with the clap log.

The full suite (every fault, 3 Cassandra nodes) is `make up-ha && make chaos`: docs/RELIABILITY.md.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest
import websockets

from loadtest.chaos.clients import ClapBook, FailoverReader
from loadtest.chaos.deployment import Deployment
from loadtest.chaos.suite import Suite, SuiteConfig
from tests.support.processes import REPO, free_port

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]

HA_SH = REPO / "deploy" / "local" / "ha.sh"


@pytest.fixture(scope="module")
def ha_run_dir(real_services, run_id, log_dir) -> Path:
    run_dir = log_dir / "ha"
    ports = [free_port() for _ in range(10)]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HA_")},
        "HA_RUN_DIR": str(run_dir),
        "HA_KAFKA_PORTS": " ".join(map(str, ports[0:3])),
        "HA_KAFKA_CONTROLLER_PORTS": " ".join(map(str, ports[3:6])),
        "HA_GATEWAY_PORTS": " ".join(map(str, ports[6:8])),
        "HA_PROCESSOR_WEB_PORTS": " ".join(map(str, ports[8:10])),
        "HA_PROJECTORS": "1",
        # The CI Cassandra (one node) instead of three: this subset is about Kafka and the services.
        "HA_CASSANDRA_IPS": "127.0.0.1",
        "CASSANDRA_RF": "1",
        "CASSANDRA_KEYSPACE": f"chaos_{run_id}",
        "CLAP_PARTITIONS": "6",
        "CLAP_SECRET": "chaos-subset-secret",
        # Every identity of the load comes from 127.0.0.1.
        "NEW_IDENTITIES_PER_MINUTE": "100000",
        "NEW_IDENTITY_BURST": "100000",
    }
    up = subprocess.run(["bash", str(HA_SH), "up", "kafka", "apps"], env=env, capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, f"ha.sh up failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}"
        yield run_dir
    finally:
        subprocess.run(["bash", str(HA_SH), "clean"], env=env, capture_output=True, timeout=300)


async def test_a_gateway_on_sigterm_closes_with_1012_and_its_readers_move_at_once(ha_run_dir):
    deployment = Deployment.load(ha_run_dir)
    second = deployment.gateway_ws[1]
    direct = await websockets.connect(second)
    book = ClapBook()
    book.articles = ("sigterm-room",)
    reader = FailoverReader("moving", deployment.gateway_ws, 1, book)
    stop = asyncio.Event()
    task = asyncio.create_task(reader.run(time.monotonic() + 120, stop))
    try:
        deadline = time.monotonic() + 20
        while reader.connection is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert reader.connection is not None and reader.connection.gateway == 1
        await deployment.ha("stop", "gateway2")
        await direct.wait_closed()
        assert direct.close_code == 1012
        deadline = time.monotonic() + 10
        while (reader.connection is None or reader.connection.gateway != 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert reader.connection is not None and reader.connection.gateway == 0
        assert reader.stats.reconnects == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await deployment.ha("start", "gateway2")


async def test_kill_9_of_a_gateway_and_of_the_busy_partitions_leader_loses_and_doubles_nothing(ha_run_dir):
    config = SuiteConfig(run_dir=ha_run_dir, faults=["gateway-kill", "leader-kill"], baseline=False,
                         clappers=6, overclappers=2, readers=8, warmup_s=5, down_s=5, after_s=5,
                         settle_timeout_s=60, deadline_s=600)
    results = await Suite(config).run()
    assert [r.fault for r in results] == ["gateway-kill", "leader-kill", "final"]
    for result in results:
        assert result.problems == [], (result.fault, result.problems)
        assert (result.lost, result.double_counts, result.missing, result.regressions, result.drops) == (0, 0, 0, 0, 0)
    gateway_kill, leader_kill, final = results
    # Every reader of the killed gateway (half of them) moved to the other one.
    assert gateway_kill.readers_reconnected == 4
    assert gateway_kill.victim == "gateway1"
    assert leader_kill.victim.startswith("kafka")
    assert gateway_kill.ack_recovery_s is not None and leader_kill.ack_recovery_s is not None
    assert final.acked == gateway_kill.acked + leader_kill.acked
