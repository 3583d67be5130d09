"""Read a Prometheus text endpoint into {(sample name, sorted labels): value}."""
from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, set[str]]:
    """The samples and every name a query could use: sample names (``_total``, ``_bucket``...)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, {name for name, _ in samples}


def scrape(url: str) -> tuple[Samples, set[str]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return parse(response.read().decode())


def registry_names(registry: CollectorRegistry) -> set[str]:
    return parse(generate_latest(registry).decode())[1]


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when absent (a labelled counter nobody has touched yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def values(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (sample, labels), v in samples.items() if sample == name}
