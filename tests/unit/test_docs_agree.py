"""The documents, the Kubernetes manifests and the code's defaults say one thing.

Each number the design rests on (partitions, replication, the connection cap, the autoscaler's
target, how many gateways and workers 100,000 readers need, what that costs) is stated in several
places. Here each statement is found where it is made and compared with the source of truth:
the code's default, or the manifest that deploys it. A document that says another number, or a
manifest changed without its documents, fails with the place and the two numbers.
"""
from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gateway.config import GatewayConfig
from processor.config import ProcessorConfig

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DOCS = {name: REPO / name for name in ("README.md", "docs/DESIGN.md", "docs/BENCHMARKS.md", "deploy/k8s/README.md")}
MANIFESTS = {f"deploy/k8s/{p.name}": p for p in sorted(K8S.glob("*.yaml"))}

# The load the capacity plan is for (the assignment's figure, docs/DESIGN.md §6).
PLANNED_READERS = 100_000


@cache
def text(name: str) -> str:
    return {**DOCS, **MANIFESTS}[name].read_text()


@cache
def objects() -> list[dict[str, Any]]:
    found = []
    for name, path in MANIFESTS.items():
        if name.endswith(("kustomization.yaml", "secret.yaml")):
            continue
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def obj(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in objects() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"deploy/k8s has {len(found)} {kind}/{name}"
    return found[0]


def config_map() -> dict[str, str]:
    return obj("ConfigMap", "clap-config")["data"]


def gateway_env() -> dict[str, str]:
    container = obj("Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def cpu(workload: dict[str, Any]) -> float:
    request = workload["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    return int(request[:-1]) / 1000 if request.endswith("m") else float(request)


def number(found: str) -> int:
    return int(found.replace(",", ""))


def statements(pattern: str, names: list[str]) -> list[tuple[str, int]]:
    """(where, number) for each match of pattern's first non-empty group in the named files."""
    found = []
    for name in names:
        for match in re.finditer(pattern, text(name)):
            value = next(g for g in match.groups() if g)
            line = text(name).count("\n", 0, match.start()) + 1
            found.append((f"{name}:{line} {match.group(0)!r}", number(value)))
    return found


def assert_all_say(expected: int, said: list[tuple[str, int]], what: str, at_least_in: list[str] = ()) -> None:
    wrong = [(where, value) for where, value in said if value != expected]
    assert wrong == [], f"{what} is {expected}, but these say otherwise: {wrong}"
    for name in at_least_in:
        assert any(where.startswith(f"{name}:") for where, _ in said), f"{name} no longer states {what}"


def test_one_partition_count() -> None:
    partitions = ProcessorConfig().partitions
    deployed = {
        "deploy/k8s/config.yaml CLAP_PARTITIONS": int(config_map()["CLAP_PARTITIONS"]),
        "KafkaTopic claps": obj("KafkaTopic", "claps")["spec"]["partitions"],
        "KafkaTopic clap-counts": obj("KafkaTopic", "clap-counts")["spec"]["partitions"],
        # A worker beyond the partition count gets no partition.
        "processor HPA maxReplicas": obj("HorizontalPodAutoscaler", "processor")["spec"]["maxReplicas"],
    }
    assert deployed == dict.fromkeys(deployed, partitions), f"processor/config.py says {partitions}"
    everywhere = [*DOCS, *MANIFESTS]
    said = statements(r"\b(\d[\d,]*) partitions\b", everywhere)
    said += statements(r"CLAP_PARTITIONS`?\s*(?:=|\()\s*\"?(\d+)", everywhere)
    said += statements(r"fixed at creation \((\d+)", everywhere)
    said += statements(r"\bkeep (\d+)\.", everywhere)
    assert_all_say(partitions, said, "the clap topic's partition count",
                   at_least_in=["docs/DESIGN.md", "docs/BENCHMARKS.md", "deploy/k8s/README.md"])


def test_one_replication_factor_and_min_isr() -> None:
    rf = int(config_map()["KAFKA_RF"])
    min_isr = ProcessorConfig(replication_factor=rf).min_insync_replicas
    kafka = obj("Kafka", "clap-kafka")["spec"]["kafka"]["config"]
    brokers = obj("KafkaNodePool", "kafka")["spec"]["replicas"]
    assert kafka["default.replication.factor"] == rf == int(config_map()["CASSANDRA_RF"])
    assert kafka["min.insync.replicas"] == min_isr
    assert brokers == obj("CassandraDatacenter", "dc1")["spec"]["size"] == rf
    for topic in [d for d in objects() if d["kind"] == "KafkaTopic"]:
        assert topic["spec"]["replicas"] == rf, topic["metadata"]["name"]
        assert topic["spec"]["config"]["min.insync.replicas"] == min_isr, topic["metadata"]["name"]
    everywhere = [*DOCS, *MANIFESTS]
    assert_all_say(rf, statements(r"\bRF (\d+)", everywhere), "the replication factor (Kafka and Cassandra)",
                   at_least_in=["docs/DESIGN.md"])
    said = statements(r"min(?:\.insync\.replicas`?\s*=?\s*| ISR )(\d+)", everywhere)
    assert_all_say(min_isr, said, "min.insync.replicas", at_least_in=["docs/DESIGN.md", "deploy/k8s/README.md"])


def test_one_connection_cap() -> None:
    cap = GatewayConfig().max_connections
    assert int(gateway_env()["MAX_CONNECTIONS"]) == cap, "deploy/k8s/gateway.yaml MAX_CONNECTIONS"
    everywhere = [*DOCS, *MANIFESTS]
    said = statements(r"([\d,]{5,}) sockets", everywhere)
    said += statements(r"MAX_CONNECTIONS`?\s*(?:=|is)\s*([\d,]+)", everywhere)
    said += statements(r"([\d,]{5,}) \(`MAX_CONNECTIONS`", everywhere)
    said += statements(r"100,000 / ([\d,]{5,})(?= rounds| →)", everywhere)
    said += statements(r"÷ ([\d,]{5,}) per process", everywhere)
    said += statements(r"\(([\d,]{5,}) connections\)", everywhere)
    assert_all_say(cap, said, "a gateway's connection cap (MAX_CONNECTIONS)",
                   at_least_in=["docs/DESIGN.md", "docs/BENCHMARKS.md", "deploy/k8s/README.md"])
    command = obj("Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    open_files = int(re.search(r"ulimit -S -n (\d+)", command).group(1))
    assert cap < open_files
    assert_all_say(open_files, statements(r"([\d,]{5,}) open files", everywhere), "the gateway's open-file limit",
                   at_least_in=["docs/DESIGN.md"])


def gateway_target() -> int:
    metrics = obj("HorizontalPodAutoscaler", "gateway")["spec"]["metrics"]
    return int(next(m["pods"]["target"]["averageValue"] for m in metrics if m["type"] == "Pods"))


def test_one_autoscaler_target() -> None:
    target = gateway_target()
    # The HPA acts above target + 10%: before a pod reaches the cap and refuses readers.
    assert target * 1.1 < GatewayConfig().max_connections
    everywhere = [*DOCS, *MANIFESTS]
    said = statements(r"(?:HPA|autoscaler)[’'s]*\s+target\s+of\s+([\d,]+)", everywhere)
    said += statements(r"[Tt]arget ([\d,]+) per pod|average ([\d,]+) per pod|lower target \(([\d,]+)\)", everywhere)
    assert_all_say(target, said, "the gateway autoscaler's connections per pod",
                   at_least_in=["docs/BENCHMARKS.md", "deploy/k8s/README.md", "deploy/k8s/gateway.yaml"])


def test_one_gateway_count_for_the_planned_readers() -> None:
    cap, target = GatewayConfig().max_connections, gateway_target()
    # Enough to hold everyone with one pod lost (a crash, a rollout step, a drain)...
    gateways = math.ceil(PLANNED_READERS / cap) + 1
    # ... which is also where the autoscaler settles at the planned load.
    assert math.ceil(PLANNED_READERS / target) == gateways
    assert PLANNED_READERS / (gateways - 1) <= cap
    assert obj("HorizontalPodAutoscaler", "gateway")["spec"]["maxReplicas"] == 2 * gateways
    said = statements(r"(\d+) gateway processes \(open files decide", ["docs/DESIGN.md"])
    said += statements(r"At 100k users \((\d+) gateways\)", ["docs/DESIGN.md"])
    said += statements(r"\*\*(\d+) gateway processes, one vCPU each\*\*|spread over all (\d+)|the (\d+) gateways above",
                       ["docs/BENCHMARKS.md"])
    said += statements(r"settles on (\d+) pods|(\d+) gateways, \d+ processor workers", ["deploy/k8s/README.md"])
    said += statements(r"that is (\d+) pods|plan of (\d+)|; (\d+) of them carry", ["deploy/k8s/gateway.yaml"])
    said += statements(r"\| gateways \| (\d+) × ", ["docs/BENCHMARKS.md"])
    assert_all_say(gateways, said, f"the gateway count for {PLANNED_READERS:,} readers",
                   at_least_in=["docs/DESIGN.md", "docs/BENCHMARKS.md", "deploy/k8s/README.md", "deploy/k8s/gateway.yaml"])


def test_one_processor_worker_plan() -> None:
    said = statements(r"(\d+) processor\s+workers for a", ["docs/DESIGN.md"])
    said += statements(r"Plan \*\*(\d+) workers\*\*|\| processor workers \| (\d+) × ", ["docs/BENCHMARKS.md"])
    said += statements(r"runs (\d+) for the peak|\d+ gateways, (\d+) processor workers", ["deploy/k8s/README.md"])
    said += statements(r"and (\d+) of them are the plan", ["deploy/k8s/processor.yaml"])
    assert said, "no document states the planned processor workers"
    workers = said[0][1]
    assert_all_say(workers, said, "the planned processor workers",
                   at_least_in=["docs/DESIGN.md", "docs/BENCHMARKS.md", "deploy/k8s/README.md"])
    hpa = obj("HorizontalPodAutoscaler", "processor")["spec"]
    assert hpa["minReplicas"] <= workers <= hpa["maxReplicas"] == ProcessorConfig().partitions


def test_one_cost_and_it_is_what_the_manifests_request() -> None:
    rows = dict(re.findall(r"^\| (gateways|processor workers|projectors|Kafka|Cassandra) \| ([^|]+) \|",
                           text("docs/BENCHMARKS.md"), re.MULTILINE))
    vcpu = {name: [float(n) for n in re.findall(r"\d+(?:\.\d+)?", cell)] for name, cell in rows.items()}
    assert set(vcpu) == {"gateways", "processor workers", "projectors", "Kafka", "Cassandra"}, rows
    pool, dc = obj("KafkaNodePool", "kafka")["spec"], obj("CassandraDatacenter", "dc1")["spec"]
    projector = obj("Deployment", "projector")
    assert vcpu["Kafka"] == [pool["replicas"], float(pool["resources"]["requests"]["cpu"])]
    assert vcpu["Cassandra"] == [dc["size"], float(dc["resources"]["requests"]["cpu"])]
    assert vcpu["projectors"] == [projector["spec"]["replicas"], cpu(projector)]
    assert vcpu["gateways"][1] == cpu(obj("Deployment", "gateway"))
    assert vcpu["processor workers"][1] == cpu(obj("StatefulSet", "processor"))
    total = sum(count * each for count, each in vcpu.values())
    assert total == int(total)
    monthly = round(total * 0.04 * 730)  # the stated $0.04 per vCPU-hour, 730 hours a month
    said_vcpu = statements(r"\*\*(\d+) vCPU\*\*", ["docs/BENCHMARKS.md"])
    said_vcpu += statements(r"about\s+(\d+)\s+vCPU", ["docs/DESIGN.md", "deploy/k8s/README.md"])
    assert_all_say(int(total), said_vcpu, "the planned vCPU",
                   at_least_in=["docs/DESIGN.md", "docs/BENCHMARKS.md", "deploy/k8s/README.md"])
    said_cost = statements(r"\*\*\$([\d,]+) / month\*\*", ["docs/BENCHMARKS.md"])
    said_cost += statements(r"roughly \$([\d,]+) a month", ["docs/DESIGN.md"])
    assert_all_say(monthly, said_cost, "the monthly cost", at_least_in=["docs/DESIGN.md", "docs/BENCHMARKS.md"])


def test_the_standby_replicas_the_documents_promise_are_on() -> None:
    from processor.app import app

    promised = [name for name in DOCS if "table_standby_replicas" in text(name) or "standby copy" in text(name)]
    assert promised, "no document says how a failover avoids the changelog replay"
    # One standby copy of every table partition: what DESIGN and deploy/k8s describe.
    assert app.conf.table_standby_replicas == ProcessorConfig.standby_replicas == 1


def broker_property(path: Path, name: str) -> int:
    found = re.findall(rf"^{re.escape(name)}=(\d+)$", path.read_text(), re.MULTILINE)
    assert len(found) == 1, f"{path.relative_to(REPO)} sets {name} {len(found)} times"
    return int(found[0])


def test_every_broker_accepts_the_processors_session_timeout_and_the_documents_say_it() -> None:
    """A session timeout below the broker's floor makes every worker fail to join its group."""
    from processor.app import app

    config = ProcessorConfig()
    floor = "group.min.session.timeout.ms"
    floors = {
        "deploy/local/kafka/server.properties.tmpl": broker_property(REPO / "deploy/local/kafka/server.properties.tmpl", floor),
        "deploy/local/ha/kafka-node.properties.tmpl": broker_property(REPO / "deploy/local/ha/kafka-node.properties.tmpl", floor),
        "deploy/k8s/kafka.yaml": obj("Kafka", "clap-kafka")["spec"]["kafka"]["config"][floor],
    }
    assert len(set(floors.values())) == 1, f"the brokers' {floor} differ: {floors}"
    session_ms, heartbeat_ms = config.session_timeout_s * 1000, config.heartbeat_interval_s * 1000
    assert floors["deploy/k8s/kafka.yaml"] <= session_ms, f"processor/config.py's session timeout is under {floors}"
    # Kafka's advice: heartbeats at most a third of the session, so one lost heartbeat is survived.
    assert 3 * heartbeat_ms <= session_ms
    assert (app.conf.broker_session_timeout, app.conf.broker_heartbeat_interval) == (config.session_timeout_s, config.heartbeat_interval_s)
    assert "PROCESSOR_SESSION_TIMEOUT_S" not in config_map(), "one source of truth: processor/config.py"

    reliability = "docs/RELIABILITY.md"
    said = statements(r"(\d+) s session timeout", [*DOCS])
    said += [(f"{reliability}:{where}", value) for where, value in _said_in(reliability, r"(\d+) s session timeout")]
    said += [(f"{reliability}:{where}", value) for where, value in _said_in(reliability, r"PROCESSOR_SESSION_TIMEOUT_S` \| `(\d+)`")]
    assert_all_say(int(config.session_timeout_s), said, "the processor's session timeout (s)",
                   at_least_in=["docs/DESIGN.md", "docs/BENCHMARKS.md", "README.md", reliability])
    heartbeat = re.findall(r"PROCESSOR_HEARTBEAT_INTERVAL_S` \| `([\d.]+)`", (REPO / reliability).read_text())
    assert [float(value) for value in heartbeat] == [config.heartbeat_interval_s], heartbeat
    said_floor = statements(r"group\.min\.session\.timeout\.ms`?[^.\n]*?\b(\d[\d,]*) ms", [*DOCS, *MANIFESTS])
    said_floor += [(f"{reliability}:{w}", v) for w, v in _said_in(reliability, r"group\.min\.session\.timeout\.ms`?[^.\n]*?\b(\d[\d,]*) ms")]
    assert_all_say(floors["deploy/k8s/kafka.yaml"], said_floor, f"the brokers' {floor}", at_least_in=["docs/BENCHMARKS.md"])


def _said_in(name: str, pattern: str) -> list[tuple[str, int]]:
    """statements() for a document outside DOCS (whose other numbers are not checked here)."""
    content = (REPO / name).read_text()
    return [(f"{content.count(chr(10), 0, m.start()) + 1} {m.group(0)!r}", number(next(g for g in m.groups() if g)))
            for m in re.finditer(pattern, content)]


def test_the_worker_plan_follows_the_measured_rate_the_documents_quote() -> None:
    """The plan is the peak over one worker's measured rate, with 2x headroom; every document
    quotes the rate the capacity tool computes with, so a new measurement moves them all."""
    from loadtest.capacity import EVENTS_PER_WORKER, SCALES

    planned = statements(r"(\d+) processor\s+workers for a", ["docs/DESIGN.md"])
    assert planned and planned[0][1] == math.ceil(2 * SCALES[0].clap_events_peak / EVENTS_PER_WORKER)
    rate = f"{EVENTS_PER_WORKER:,}"
    for name in ("README.md", "docs/DESIGN.md", "docs/BENCHMARKS.md", "deploy/k8s/README.md"):
        assert rate in text(name), f"{name} does not quote the measured {rate} clap events/s per worker"
