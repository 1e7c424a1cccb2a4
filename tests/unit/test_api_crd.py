"""The generated CRD: committed copies are fresh, the schema is structural, CEL rules are present."""

from __future__ import annotations

from typing import Any

import yaml

from kubeinfer_api import crd
from kubeinfer_api.spec import IMMUTABLE_FIELDS


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, sub in node.get("properties", {}).items():
            found += walk(sub, f"{path}.{key}")
        if "items" in node:
            found += walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += walk(node["additionalProperties"], f"{path}{{}}")
    return found


def schema() -> dict[str, Any]:
    built: dict[str, Any] = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return built


def test_committed_crds_are_fresh() -> None:
    assert crd.main(["--check"]) == 0, "run `make crds`"
    for path in crd.CRD_PATHS:
        assert yaml.safe_load(path.read_text())["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_schema_is_structural() -> None:
    for path, node in walk(schema()):
        assert "anyOf" not in node and "$ref" not in node and "allOf" not in node, path
        assert ("type" in node or node.get("x-kubernetes-int-or-string")
                or node.get("x-kubernetes-preserve-unknown-fields")), f"{path} has no type"


def test_nested_defaults_are_filled_by_the_apiserver() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    for name in ("task", "strategy", "workers", "rendezvous", "failurePolicy", "successPolicy"):
        assert isinstance(spec[name].get("default"), dict), name
    # CEL rules on an object are evaluated against its default: it must carry the fields they read.
    assert spec["strategy"]["default"]["type"] == "data"
    assert spec["rendezvous"]["default"]["backend"] == "auto"
    assert "default" not in spec["strategy"]["properties"]["context"], "has(context) must stay meaningful"


def test_immutable_fields_and_cross_field_rules() -> None:
    spec = schema()["properties"]["spec"]
    for name in IMMUTABLE_FIELDS:
        rules = [r["rule"] for r in spec["properties"][name]["x-kubernetes-validations"]]
        assert "self == oldSelf" in rules, name
    assert "suspend" not in IMMUTABLE_FIELDS
    messages = " ".join(r["message"] for r in spec["x-kubernetes-validations"])
    for fragment in ("must divide the world size", "nccl needs GPUs", "pipeline needs at least 2"):
        assert fragment in messages


def test_status_conditions_are_a_map_list() -> None:
    conditions = schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_printer_columns_and_names() -> None:
    version = crd.build_crd()["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]][:1] == ["State"]
    assert version["subresources"] == {"status": {}}
    assert crd.build_crd()["spec"]["names"]["shortNames"] == ["dinf"]
