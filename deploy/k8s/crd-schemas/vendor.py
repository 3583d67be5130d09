"""Extract the validation schema of one operator CRD into a JSON file the manifest tests read.

    python deploy/k8s/crd-schemas/vendor.py CRDS.yaml KIND VERSION OUT.json

CRDS.yaml holds the operator's CustomResourceDefinitions as its release installs them (README.md
in this folder names each file's repository, tag, commit and path); the one for KIND is used. Only what validation uses
is kept: the served version's ``openAPIV3Schema``, without the ``description`` texts, which are
most of the bytes and change nothing about what is accepted. The output is canonical JSON (sorted
keys), so re-vendoring the same CRD gives the same file.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def without_descriptions(schema: Any) -> Any:
    """The schema with every ``description`` keyword removed (but not properties so named)."""
    if isinstance(schema, list):
        return [without_descriptions(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kept = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in ("properties", "patternProperties", "definitions", "$defs"):
            # Keys here are names chosen by the CRD (a field may well be called "description").
            kept[key] = {name: without_descriptions(sub) for name, sub in value.items()}
        else:
            kept[key] = without_descriptions(value)
    return kept


def extract(crds: list[dict[str, Any]], kind: str, version: str) -> dict[str, Any]:
    matching = [crd for crd in crds if crd and crd.get("kind") == "CustomResourceDefinition"
                and crd["spec"]["names"]["kind"] == kind]
    if len(matching) != 1:
        raise SystemExit(f"expected one CustomResourceDefinition of {kind}, found {len(matching)}")
    spec = matching[0]["spec"]
    for entry in spec["versions"]:
        if entry["name"] == version:
            if not entry.get("served", False):
                raise SystemExit(f"{spec['names']['kind']} {version} is not served by this CRD")
            return {
                "group": spec["group"],
                "version": version,
                "kind": spec["names"]["kind"],
                "openAPIV3Schema": without_descriptions(entry["schema"]["openAPIV3Schema"]),
            }
    raise SystemExit(f"{spec['names']['kind']} has no version {version}: {[v['name'] for v in spec['versions']]}")


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 64
    source, kind, version, out = Path(argv[1]), argv[2], argv[3], Path(argv[4])
    crds = list(yaml.load_all(source.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    out.write_text(json.dumps(extract(crds, kind, version), sort_keys=True, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
