"""The dashboard and the alert rules query only metrics the services export, and the rules are
well formed. (tests/integration/test_metrics.py checks the same names against live scrapes.)"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import processor.metrics
import projector.metrics
from gateway.server import Metrics
from tests.support.observability import alert_rules, dashboard_exprs, exported_names, metric_names, queried_metrics

# Made by Prometheus itself, not by a service.
PROMETHEUS_OWN: set[str] = set()


def all_exported() -> set[str]:
    return (exported_names(Metrics().registry) | exported_names(processor.metrics.registry)
            | exported_names(projector.metrics.registry))


def test_every_metric_the_dashboard_and_alerts_query_is_exported():
    missing = {name: sorted(where) for name, where in queried_metrics().items()
               if name not in all_exported() | PROMETHEUS_OWN}
    assert missing == {}


def test_each_service_is_on_the_dashboard():
    used = set(queried_metrics())
    for prefix in ("gateway_", "processor_", "projector_"):
        assert any(name.startswith(prefix) for name in used), prefix


@pytest.mark.parametrize("expr, names", [
    ('sum by (code) (rate(gateway_claps_refused_total{code="unavailable"}[5m])) > 0.1', {"gateway_claps_refused_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(processor_batch_seconds_bucket[10m])))", {"processor_batch_seconds_bucket"}),
    ("sum(processor_lag) > 1000 and delta(sum(processor_lag)[10m:1m]) > 0", {"processor_lag"}),
    ("max(projector_lag) > 0 and (time() - max(projector_last_commit_timestamp_seconds)) > 300",
     {"projector_lag", "projector_last_commit_timestamp_seconds"}),
    ("gateway_connections / gateway_max_connections > 0.95", {"gateway_connections", "gateway_max_connections"}),
])
def test_metric_names_are_read_from_promql(expr, names):
    assert metric_names(expr) == names


def test_alerts_page_for_lag_refused_acks_a_full_gateway_and_a_stopped_projector():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    paging = {name for name, rule in rules.items() if rule["labels"]["severity"] == "page"}
    assert {"ClapProcessorLagGrowing", "ClapProjectorLagGrowing", "ClapAcksRefused", "ClapGatewayFull",
            "ClapProjectorStopped"} <= paging
    for name, rule in rules.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, name
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_every_dashboard_query_names_a_metric():
    empty = [title for title, expr in dashboard_exprs().items() if not metric_names(expr)]
    assert empty == []


def test_the_readme_names_every_metric_each_service_exports():
    """An operator reads the README's table to know what to scrape: nothing exported is left off it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    registries = {"gateway": Metrics().registry, "processor": processor.metrics.registry,
                  "projector": projector.metrics.registry}
    missing = []
    for service, registry in registries.items():
        for family in registry.collect():
            shown = f"{family.name}_total" if family.type == "counter" else family.name
            if not re.search(rf"`{re.escape(shown)}[`{{]", readme):
                missing.append(f"{service}: {shown}")
    assert missing == []
