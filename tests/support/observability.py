"""The metric names the Grafana dashboard and the alert rules query, read from their files."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from tests.support.processes import REPO

DASHBOARD = REPO / "deploy/grafana/clap-service.json"
ALERTS = REPO / "deploy/prometheus/clap-alerts.rules.yaml"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan", "le"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside {}, by (...)), durations (inside []) or strings."""
    text = _STRINGS.sub('""', expr)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def dashboard_exprs(path: Path = DASHBOARD) -> dict[str, str]:
    """Panel title -> expression, for every query of every panel (rows included)."""
    doc = json.loads(path.read_text())
    exprs: dict[str, str] = {}

    def visit(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                exprs[f"{panel['title']} [{target['refId']}]"] = target["expr"]
            visit(panel.get("panels", []))

    visit(doc["panels"])
    return exprs


def alert_rules(path: Path = ALERTS) -> list[dict]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def queried_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is queried (panels and alerts)."""
    used: dict[str, set[str]] = {}
    sources = {**{f"panel {k}": v for k, v in dashboard_exprs().items()},
               **{f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()}}
    for where, expr in sources.items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return used


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry's families export, labelled ones not yet set included."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ("",))}
