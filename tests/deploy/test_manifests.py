"""deploy/k8s, checked offline: it renders, every object passes its schema, the objects fit together.

The schemas: Kubernetes 1.33's for the core kinds (kubernetes-validate, strict), and the
operators' own for Strimzi, cass-operator and Prometheus-operator kinds (vendored in
deploy/k8s/crd-schemas/). What no schema can see is checked here directly: selectors that select
nothing, an autoscaler aimed at a missing workload, topics that differ from what the service
creates, a pod other than a gateway reachable from outside.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import processor.topics
from processor.config import ProcessorConfig
from tests.deploy.manifests import K8S, Manifest, RenderError, name_of, problems, render

NAMESPACE = "claps"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


@pytest.fixture(scope="module")
def docs() -> list[Manifest]:
    return render(K8S)


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Manifest], kind: str, name: str) -> Manifest:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: Manifest, name: str) -> dict[str, Any]:
    spec = pod_spec(workload)
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    assert len(found) == 1, f"{name_of(workload)} has no single container {name}"
    return found[0]


def environment(docs: list[Manifest], c: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet builds it from ConfigMaps and literal values."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in c.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
    return env


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def pods(docs: list[Manifest]) -> dict[str, dict[str, str]]:
    """Every kind of pod the deployment runs -> its labels: our workloads' templates, plus the pods
    the operators create from the custom resources, with the labels those operators put on them."""
    found = {name_of(w): w["spec"]["template"]["metadata"]["labels"] for kind in WORKLOAD_KINDS for w in of_kind(docs, kind)}
    for kafka in of_kind(docs, "Kafka"):
        cluster = kafka["metadata"]["name"]
        strimzi = {"strimzi.io/cluster": cluster, "strimzi.io/kind": "Kafka"}
        for pool in of_kind(docs, "KafkaNodePool"):
            if pool["metadata"]["labels"].get("strimzi.io/cluster") == cluster:
                found[f"Kafka node of pool {pool['metadata']['name']}"] = {
                    **strimzi, "strimzi.io/name": f"{cluster}-kafka", "strimzi.io/pool-name": pool["metadata"]["name"]}
        if "entityOperator" in kafka["spec"]:
            found["Strimzi entity operator"] = {**strimzi, "strimzi.io/name": f"{cluster}-entity-operator"}
        if "kafkaExporter" in kafka["spec"]:
            found["Strimzi Kafka Exporter"] = {**strimzi, "strimzi.io/name": f"{cluster}-kafka-exporter"}
    for dc in of_kind(docs, "CassandraDatacenter"):
        found[f"Cassandra node of {dc['metadata']['name']}"] = {
            "cassandra.datastax.com/cluster": dc["spec"]["clusterName"],
            "cassandra.datastax.com/datacenter": dc["metadata"]["name"],
        }
    return found


def test_the_kustomization_renders_and_every_object_passes_its_schema(docs: list[Manifest]) -> None:
    assert {doc["kind"] for doc in docs} >= {
        "Kafka", "KafkaNodePool", "KafkaTopic", "CassandraDatacenter", "PodMonitor", "NetworkPolicy",
        "StatefulSet", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job",
    }
    assert problems(docs) == []


def test_every_object_lives_in_the_claps_namespace(docs: list[Manifest]) -> None:
    elsewhere = [name_of(d) for d in docs if d["kind"] != "Namespace" and d["metadata"].get("namespace") != NAMESPACE]
    assert elsewhere == []


def test_each_workload_selects_its_own_pod_template(docs: list[Manifest]) -> None:
    for kind in ("Deployment", "StatefulSet"):
        for workload in of_kind(docs, kind):
            assert selects(workload["spec"]["selector"], workload["spec"]["template"]["metadata"]["labels"]), name_of(workload)


def test_services_budgets_policies_and_monitors_select_pods_that_run(docs: list[Manifest]) -> None:
    running = pods(docs)
    selectors = [(d, {"matchLabels": d["spec"]["selector"]}) for d in of_kind(docs, "Service")]
    selectors += [(d, d["spec"]["selector"]) for d in of_kind(docs, "PodDisruptionBudget") + of_kind(docs, "PodMonitor")]
    selectors += [(d, d["spec"]["podSelector"]) for d in of_kind(docs, "NetworkPolicy") if d["spec"]["podSelector"]]
    empty = [name_of(d) for d, selector in selectors if not any(selects(selector, labels) for labels in running.values())]
    assert empty == []


def test_autoscalers_aim_at_workloads_that_leave_the_count_to_them(docs: list[Manifest]) -> None:
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        workload = one(docs, target["kind"], target["name"])
        # A fixed count would be re-applied by every `kubectl apply -k`, undoing the autoscaler.
        assert "replicas" not in workload["spec"], name_of(workload)
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_every_config_and_secret_a_pod_reads_exists(docs: list[Manifest]) -> None:
    # clap-secret is created by hand (secret.yaml says why); its template must hold the key.
    by_hand = yaml.safe_load((K8S / "secret.yaml").read_text())
    for kind in WORKLOAD_KINDS:
        for workload in of_kind(docs, kind):
            spec = pod_spec(workload)
            for c in spec.get("initContainers", []) + spec["containers"]:
                for source in c.get("envFrom", []):
                    one(docs, "ConfigMap", source["configMapRef"]["name"])
                for entry in c.get("env", []):
                    secret = entry.get("valueFrom", {}).get("secretKeyRef")
                    if secret:
                        assert secret["name"] == by_hand["metadata"]["name"], f"{name_of(workload)} reads {secret['name']}"
                        assert secret["key"] in by_hand["stringData"]


async def test_the_kafka_topics_are_exactly_what_processor_topics_creates(
    docs: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The KafkaTopics and the bootstrap Job's `python -m processor.topics` declare the same topics:
    whichever creates one first, the other finds it as it wants it."""
    created = []

    class Created(Exception):
        pass

    class RecordingAdmin:
        def __init__(self, **kwargs: Any) -> None:
            pass

        async def start(self) -> None:
            pass

        async def list_topics(self) -> list[str]:
            return []

        async def create_topics(self, new_topics: list[Any]) -> None:
            created.extend(new_topics)
            raise Created  # stop here: nothing after creation concerns the topics' settings

        async def close(self) -> None:
            pass

    monkeypatch.setattr(processor.topics, "AIOKafkaAdminClient", RecordingAdmin)
    job_env = environment(docs, container(one(docs, "Job", "clap-bootstrap"), "topics"))
    with pytest.raises(Created):
        await processor.topics.ensure_topics(ProcessorConfig.from_env(job_env))

    declared = {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"] for t in of_kind(docs, "KafkaTopic")}
    # An epoch's changelogs are made by processor.topics and by every worker before Faust starts
    # (kafka.yaml says why they have no KafkaTopic); the rest must be declared as created.
    created = [t for t in created if not t.name.endswith("-changelog")]
    assert {t.name for t in created} <= set(declared)
    for topic in created:
        spec = declared[topic.name]
        assert (spec["partitions"], spec["replicas"]) == (topic.num_partitions, topic.replication_factor), topic.name
        assert {k: str(spec["config"].get(k)) for k in topic.topic_configs} == topic.topic_configs, topic.name


def test_every_kafka_topic_keeps_acknowledged_writes_through_a_broker_loss(docs: list[Manifest]) -> None:
    kafka = one(docs, "Kafka", "clap-kafka")
    brokers = sum(p["spec"]["replicas"] for p in of_kind(docs, "KafkaNodePool") if "broker" in p["spec"]["roles"])
    for topic in of_kind(docs, "KafkaTopic"):
        min_isr = topic["spec"]["config"].get("min.insync.replicas", kafka["spec"]["kafka"]["config"]["min.insync.replicas"])
        assert 2 <= min_isr < topic["spec"]["replicas"] <= brokers, name_of(topic)
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "clap-kafka", name_of(topic)
    claps = one(docs, "KafkaTopic", "claps")["spec"]["config"]
    assert (claps["retention.ms"], claps["retention.bytes"], claps["cleanup.policy"]) == (-1, -1, "delete")
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    assert kafka["spec"]["kafka"]["config"]["unclean.leader.election.enable"] is False


def test_only_the_gateways_accept_connections_from_anywhere(docs: list[Manifest]) -> None:
    running = pods(docs)
    policies = of_kind(docs, "NetworkPolicy")
    deny_all = [p for p in policies if p["spec"]["podSelector"] == {} and "Ingress" in p["spec"]["policyTypes"]
                and not p["spec"].get("ingress")]
    assert deny_all, "no policy denies ingress to every pod by default"

    def open_to_anyone(rule: dict[str, Any]) -> bool:
        return "from" not in rule or any("ipBlock" in peer for peer in rule["from"])

    reachable = {
        pod for pod, labels in running.items()
        if any(selects(p["spec"]["podSelector"], labels) and any(open_to_anyone(r) for r in p["spec"].get("ingress", []))
               for p in policies)
    }
    assert reachable == {"Deployment/gateway"}
    # Strimzi writes the brokers' policies itself: without peers a listener is open to everyone.
    for listener in one(docs, "Kafka", "clap-kafka")["spec"]["kafka"]["listeners"]:
        assert listener.get("networkPolicyPeers"), f"Kafka listener {listener['name']} is open to any pod"


def test_the_gateway_drains_before_it_closes_and_the_cap_comes_after_the_autoscaler(docs: list[Manifest]) -> None:
    gateway = one(docs, "Deployment", "gateway")
    c = container(gateway, "gateway")
    # SIGTERM must reach the gateway itself (it then closes every socket with 1012).
    assert c["command"][-1].endswith("exec python -m gateway"), c["command"]
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    # The gateway bounds its own stop at 10 s (gateway/server.py); both fit in the grace period.
    assert int(sleep[1]) + 10 < pod_spec(gateway)["terminationGracePeriodSeconds"]
    env = environment(docs, c)
    cap = int(env["MAX_CONNECTIONS"])
    open_files = int(c["command"][-1].split("ulimit -S -n ")[1].split()[0])
    assert cap < open_files
    target = next(m["pods"]["target"]["averageValue"] for m in one(docs, "HorizontalPodAutoscaler", "gateway")["spec"]["metrics"]
                  if m["type"] == "Pods" and m["pods"]["metric"]["name"] == "gateway_connections")
    # The HPA acts only above target + 10%: that must come before pods refuse readers.
    assert int(target) * 1.1 < cap


def test_the_processor_keeps_its_state_on_its_own_volume_and_is_ready_on_its_web_port(docs: list[Manifest]) -> None:
    processor_set = one(docs, "StatefulSet", "processor")
    c = container(processor_set, "processor")
    env = environment(docs, c)
    claims = {t["metadata"]["name"] for t in processor_set["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts.get(env["PROCESSOR_STATE_DIR"]) in claims
    probe = c["readinessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert probe["path"] == "/ready"
    assert ports[probe["port"]] == int(env["PROCESSOR_WEB_PORT"])
    # The volume is written by the worker's user.
    assert pod_spec(processor_set)["securityContext"]["fsGroup"] == pod_spec(processor_set)["securityContext"]["runAsUser"]
    hpa = one(docs, "HorizontalPodAutoscaler", "processor")
    # A worker beyond the partition count gets no partition.
    assert hpa["spec"]["maxReplicas"] == int(env["CLAP_PARTITIONS"])


def break_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    text = (copy / file).read_text()
    assert text.count(old) == 1, f"{old!r} is not in {file} exactly once"
    (copy / file).write_text(text.replace(old, new))
    return copy


BROKEN: list[tuple[str, str, str, str, str]] = [
    # (case, file, text, broken text, what the suite must say)
    ("a misspelled field in a core kind", "gateway.yaml", "  revisionHistoryLimit: 5\n  # Only",
     "  revisionHistoryLimt: 5\n  # Only", "Deployment/gateway .spec: Additional properties are not allowed ('revisionHistoryLimt' was unexpected)"),
    ("a wrong type in a core kind", "processor.yaml", "  minReadySeconds: 30", "  minReadySeconds: half a minute",
     "StatefulSet/processor .spec.minReadySeconds: 'half a minute' is not of type 'integer', 'null'"),
    ("a wrong type in a custom resource", "kafka.yaml", "name: claps\n  labels:\n    strimzi.io/cluster: clap-kafka\nspec:\n  partitions: 12",
     "name: claps\n  labels:\n    strimzi.io/cluster: clap-kafka\nspec:\n  partitions: twelve",
     "KafkaTopic/claps .spec.partitions: 'twelve' is not of type 'integer'"),
    ("an unknown field in a custom resource", "kafka.yaml", "        tls: false\n", "        tls: false\n        tsl: false\n",
     "Kafka/clap-kafka .spec.kafka.listeners[0]: Additional properties are not allowed ('tsl' was unexpected)"),
    ("a missing required field in a custom resource", "cassandra.yaml", "  size: 3\n", "",
     "CassandraDatacenter/dc1 .spec: 'size' is a required property"),
    ("a value outside an operator's enum", "kafka.yaml", 'roles: ["controller", "broker"]', 'roles: ["controller", "brokers"]',
     "KafkaNodePool/kafka .spec.roles[1]: 'brokers' is not one of ['controller', 'broker']"),
    ("an API version the operator does not serve", "monitoring.yaml", "monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata:\n  name: gateway",
     "monitoring.coreos.com/v1alpha1\nkind: PodMonitor\nmetadata:\n  name: gateway",
     "PodMonitor/gateway: no schema for monitoring.coreos.com/v1alpha1 PodMonitor"),
    ("a quantity the API cannot parse", "gateway.yaml", "memory: 320Mi", "memory: 320 MiB",
     "Deployment/gateway .spec.template.spec.containers[0].resources.requests.memory: '320 MiB' is not a Kubernetes quantity"),
]


@pytest.mark.parametrize(("file", "old", "new", "expected"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_a_broken_manifest_is_rejected(tmp_path: Path, file: str, old: str, new: str, expected: str) -> None:
    found = problems(render(break_copy(tmp_path, file, old, new)))
    assert any(problem.startswith(expected) for problem in found), found


def test_a_kustomization_naming_a_missing_file_does_not_render(tmp_path: Path) -> None:
    broken = break_copy(tmp_path, "kustomization.yaml", "  - monitoring.yaml\n", "  - monitoring.yaml\n  - alerts.yaml\n")
    with pytest.raises(RenderError, match="alerts.yaml"):
        render(broken)
