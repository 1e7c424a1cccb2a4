"""Generate the CustomResourceDefinition from the pydantic models.

`python -m kubeinfer_api.crd --write` rewrites crds/ and the chart's copy; `--check` fails when they
are stale (the drift check run by the tests). Pydantic's JSON schema is turned into a *structural*
OpenAPI v3 schema: refs inlined, Optional unwrapped, free-form maps marked
`x-kubernetes-preserve-unknown-fields`, immutable fields guarded by CEL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kubeinfer_api import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from kubeinfer_api.naming import MAX_JOB_NAME
from kubeinfer_api.spec import IMMUTABLE, IMMUTABLE_FIELDS, DistributedInferenceSpec
from kubeinfer_api.status import DistributedInferenceStatus

REPO = Path(__file__).resolve().parents[2]
CRD_PATHS = (REPO / "crds" / f"{PLURAL}.{GROUP}.yaml",
             REPO / "charts" / "kubeinfer" / "crds" / f"{PLURAL}.{GROUP}.yaml")
_KEEP = ("type", "description", "enum", "minimum", "maximum", "minLength", "maxLength", "pattern",
         "maxItems", "minItems", "default", "x-kubernetes-validations", "format")


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON-schema node into a structural OpenAPI v3 schema node."""
    if "$ref" in node:
        merged = {**defs[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    variants = node.get("anyOf")
    if variants:
        not_null = [v for v in variants if v.get("type") != "null"]
        if len(not_null) == 1:
            inner = _structural(not_null[0], defs)
            return {**inner, **_scalars({k: v for k, v in node.items() if k != "anyOf"})}
        if {v.get("type") for v in not_null} == {"integer", "string"}:
            return {"x-kubernetes-int-or-string": True, **_scalars(node)}
        raise ValueError(f"cannot express union in a structural schema: {node}")
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    out = _scalars(node)
    kind = node.get("type")
    if kind == "object":
        out.update(_object(node, defs))
    elif kind == "array":
        out["items"] = _structural(node.get("items", {}), defs)
    elif kind is None:
        out.update({"x-kubernetes-preserve-unknown-fields": True})
    return out


def _scalars(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: node[k] for k in _KEEP if k in node and node[k] is not None}
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("default") == {} and node.get("type") != "object" and "$ref" not in node:
        del out["default"]
    return out


def _object(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "properties" in node:
        props = {name: _structural(sub, defs) for name, sub in node["properties"].items()}
        out: dict[str, Any] = {"properties": props}
        if node.get("required"):
            out["required"] = node["required"]
        return out
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        return {"additionalProperties": _structural(extra, defs)}
    return {"x-kubernetes-preserve-unknown-fields": True}


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="serialization")
    schema = _structural(raw, raw.get("$defs", {}))
    _default_nested_objects(model, schema)
    return schema


def _default_nested_objects(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Sub-objects built by a default factory get their full default: the apiserver checks CEL rules
    against a default without filling its nested defaults first."""
    for name, field in model.model_fields.items():
        prop = schema["properties"][field.alias or name]
        sub = field.default_factory
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            prop["default"] = sub().model_dump(by_alias=True, exclude_none=True, mode="json")
            _default_nested_objects(sub, prop)


def spec_schema() -> dict[str, Any]:
    schema = _model_schema(DistributedInferenceSpec)
    for field in IMMUTABLE_FIELDS:
        rules = schema["properties"][field].setdefault("x-kubernetes-validations", [])
        rules.append({"rule": "self == oldSelf", "message": IMMUTABLE.format(field)})
    schema["properties"]["model"]["description"] = "The model to load and where it is stored."
    return schema


def status_schema() -> dict[str, Any]:
    schema = _model_schema(DistributedInferenceStatus)
    conditions = schema["properties"]["conditions"]
    conditions.update({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    for obj in ("plan", "progress", "output", "firstFailure"):
        schema["properties"][obj].pop("default", None)
    return schema


def build_crd() -> dict[str, Any]:
    """The whole CRD manifest."""
    columns = [
        ("State", "string", ".status.state"),
        ("Succeeded", "integer", ".status.progress.succeeded"),
        ("Total", "integer", ".status.progress.total"),
        ("Progress", "string", ".status.progress.percent"),
        ("Nodes", "integer", ".spec.workers.nodes"),
        ("Restarts", "integer", ".status.restarts"),
        ("Age", "date", ".metadata.creationTimestamp"),
        ("Message", "string", ".status.message"),
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}",
                     "annotations": {"helm.sh/resource-policy": "keep"}},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR,
                      "shortNames": SHORT_NAMES, "categories": ["kubeinfer"]},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": n, "type": t, "jsonPath": p} for n, t, p in columns],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A multi-node batch inference job.",
                    "x-kubernetes-validations": [{
                        "rule": f"size(self.metadata.name) <= {MAX_JOB_NAME}",
                        "message": f"metadata.name: at most {MAX_JOB_NAME} characters (pod names derive from it)",
                    }],
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(), "status": status_schema(),
                    },
                }},
            }],
        },
    }


def render() -> str:
    header = "# Generated by `make crds` from api/kubeinfer_api; do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the committed CRD files")
    mode.add_argument("--check", action="store_true", help="exit 1 when the committed files are stale")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        for path in CRD_PATHS:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return 0
    if args.check:
        stale = [str(p) for p in CRD_PATHS if not p.exists() or p.read_text() != text]
        if stale:
            print("stale CRD (run `make crds`):", *stale, file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
