"""Render deploy/k8s and say what is wrong with each object, offline.

Core kinds are checked by kubernetes-validate against one pinned Kubernetes version, strictly (an
unknown field is an error). Custom kinds are checked with jsonschema against the operator schemas
vendored in deploy/k8s/crd-schemas/, made as strict as the API server allows (see ``strict``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
CRD_SCHEMAS = K8S / "crd-schemas"
# The oldest Kubernetes the manifests are written for: StatefulSet volume-claim retention, used
# by the processor, is GA from 1.32.
KUBERNETES_VERSION = "1.33"

Manifest = dict[str, Any]


class RenderError(Exception):
    """kustomize refused the kustomization; the message is its own."""


def kustomize() -> Path:
    """The kustomize binary `make tools` installs, at the version the Makefile pins."""
    if "KUSTOMIZE" in os.environ:
        return Path(os.environ["KUSTOMIZE"])
    pinned = re.search(r"^KUSTOMIZE_VERSION\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert pinned, "the Makefile no longer pins KUSTOMIZE_VERSION"
    return REPO / ".lib" / f"kustomize-{pinned.group(1)}" / "kustomize"


def render(directory: Path) -> list[Manifest]:
    binary = kustomize()
    if not binary.exists():
        raise FileNotFoundError(f"{binary} is missing: `make tools` (part of `make test`) installs it")
    result = subprocess.run([str(binary), "build", str(directory)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def strict(schema: Any) -> Any:
    """A CRD schema (OpenAPI v3 flavour) as the JSON Schema the API server effectively applies.

    - ``nullable: true`` admits null, which JSON Schema spells as a type.
    - An object that lists ``properties`` and neither keeps unknown fields
      (``x-kubernetes-preserve-unknown-fields``) nor says what extra keys hold rejects any other
      key. The API server would prune such a key silently; for a manifest in this repository
      that is always a mistake (a misspelled field whose setting never takes effect).
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        else:
            out[key] = strict(value)
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema, for every vendored operator schema."""
    schemas = {}
    for path in sorted(CRD_SCHEMAS.glob("*.json")):
        vendored = json.loads(path.read_text())
        schemas[(f"{vendored['group']}/{vendored['version']}", vendored["kind"])] = strict(vendored["openAPIV3Schema"])
    return schemas


def name_of(doc: Manifest) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def where(path: Iterable[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "(top level)"


# Kubernetes resource quantities (k8s.io/apimachinery/pkg/api/resource): a decimal number with an
# optional binary (Ki..Ei), decimal (n, u, m, k, M..E) or exponent suffix.
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
QUANTITY_FIELDS = {"cpu", "memory", "storage", "ephemeral-storage", "sizeLimit"}


def quantity_problems(node: Any, path: tuple[Any, ...] = ()) -> list[str]:
    """Quantities the schemas accept as any string (they are int-or-string) but the API refuses."""
    problems = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = (*path, key)
            is_quantity = key in QUANTITY_FIELDS or (key == "size" and "storage" in path)
            if is_quantity and isinstance(value, str) and not QUANTITY.match(value):
                problems.append(f"{where(here)}: {value!r} is not a Kubernetes quantity")
            problems += quantity_problems(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            problems += quantity_problems(item, (*path, index))
    return problems


def problems_of(doc: Manifest) -> list[str]:
    """What the API server (with its operators' CRDs installed) would refuse in one object."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    found = [f"{name_of(doc)} {p}" for p in quantity_problems(doc)]
    if key in crd_schemas():
        validator = jsonschema.Draft202012Validator(crd_schemas()[key])
        for error in sorted(validator.iter_errors(doc), key=lambda e: where(e.absolute_path)):
            found.append(f"{name_of(doc)} {where(error.absolute_path)}: {error.message}")
        return found
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        found.append(f"{name_of(doc)}: no schema for {key[0]} {key[1]}, neither in Kubernetes "
                     f"{KUBERNETES_VERSION} nor vendored in {CRD_SCHEMAS.relative_to(REPO)}")
    except kubernetes_validate.ValidationError as error:
        found.append(f"{name_of(doc)} {where(error.absolute_path)}: {error.message}")
    return found


def problems(docs: Iterable[Manifest]) -> list[str]:
    return [problem for doc in docs for problem in problems_of(doc)]
