"""examples/: every manifest is valid for kubeinfer and for the generated CRD; bad ones say what to fix.

Each example is checked twice: by `parse_manifest` (what `kubeinfer run` and the operator use) and
by the CRD's openAPIV3Schema (what the apiserver enforces structurally; its CEL rules are mirrored in
Python and run against a real apiserver in the e2e tests).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kubeinfer_api import crd
from kubeinfer_api.plan import backend, world_size
from kubeinfer_api.validation import SpecError, parse_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Run by the e2e tests on CPU: tiny models in the local S3 server, one per strategy.
CPU_EXAMPLES = ["data-text-to-image", "text-generation-data", "pipeline-gpt2", "device-map",
                "context-ulysses", "context-ring", "auto"]
GPU_EXAMPLES = ["flux-context-gpu"]
DROP = object()


def load(name: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return manifest


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Dotted paths where the CRD's structural schema rejects `manifest`."""
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft7Validator(schema)
    return sorted(".".join(str(p) for p in error.absolute_path) for error in validator.iter_errors(manifest))


def cel_messages() -> list[str]:
    """Every x-kubernetes-validations message in the CRD."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.extend(rule["message"] for rule in node.get("x-kubernetes-validations", []))
            for sub in node.values():
                walk(sub)
        elif isinstance(node, list):
            for sub in node:
                walk(sub)

    walk(crd.build_crd())
    return found


def edited(base: str, edits: dict[str, Any]) -> dict[str, Any]:
    """A copy of example `base` with dotted-path edits applied (DROP deletes the key)."""
    manifest = copy.deepcopy(load(base))
    for path, value in edits.items():
        *parents, leaf = path.split(".")
        node = manifest
        for key in parents:
            node = node.setdefault(key, {})
        if value is DROP:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return manifest


def test_every_strategy_has_an_example() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml") if p.stem != "local-demo") == sorted(
        CPU_EXAMPLES + GPU_EXAMPLES)
    strategies = {load(name)["spec"]["strategy"]["type"] for name in CPU_EXAMPLES}
    assert strategies == {"data", "pipeline", "deviceMap", "context", "auto"}
    contexts = [load(name)["spec"]["strategy"]["context"] for name in ("context-ring", "context-ulysses")]
    assert contexts[0]["ringDegree"] > 1 and contexts[1]["ulyssesDegree"] > 1


@pytest.mark.parametrize("name", CPU_EXAMPLES + GPU_EXAMPLES)
def test_example_is_valid_and_annotated(name: str) -> None:
    manifest = load(name)
    job, _ = parse_manifest(manifest)
    assert job == manifest["metadata"]["name"]
    assert schema_errors(manifest) == []
    lines = (EXAMPLES / f"{name}.yaml").read_text().splitlines()
    assert lines[0].startswith("# ") and lines[1].startswith("# "), "a header says what the example shows"
    assert sum("  # " in line for line in lines) >= 3, "fields worth a word carry an inline comment"


@pytest.mark.parametrize("name", CPU_EXAMPLES)
def test_cpu_example_runs_in_the_local_cluster(name: str) -> None:
    """Tiny model from the local S3 server, outputs under s3://outputs/<job>/, CPU only, small."""
    manifest = load(name)
    job, spec = parse_manifest(manifest)
    assert spec.model.uri.startswith("s3://models/tiny-")
    assert spec.output.uri == f"s3://outputs/{job}/"
    assert spec.model.credentials_secret == spec.output.credentials_secret == "s3-credentials"
    assert spec.workers.gpus_per_node == 0 and backend(spec) == "gloo"
    assert 2 <= world_size(spec) <= 4, "multi-process, yet small enough for 2 CPU cores"
    assert spec.inputs.prompts and len(spec.inputs.prompts) <= 8


def test_gpu_example_is_a_real_multi_node_gpu_job() -> None:
    _, spec = parse_manifest(load("flux-context-gpu"))
    assert spec.workers.nodes >= 2 and spec.workers.gpus_per_node >= 1 and backend(spec) == "nccl"


# (id, example, edits, message from parse_manifest, where the apiserver rejects it:
#  "schema:<dotted path>" structurally, "cel:<message fragment>" by a CEL rule, "strict" for an
#  unknown field that `kubectl apply` (strict field validation) refuses, "builtin" for the apiserver's
#  own checks of names and kinds.)
BAD: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("zero-nodes", "data-text-to-image", {"spec.workers.nodes": 0},
     "spec.workers.nodes: Input should be greater than or equal to 1", "schema:spec.workers.nodes"),
    ("unknown-strategy", "data-text-to-image", {"spec.strategy.type": "tensor"},
     "spec.strategy.type: Input should be 'data', 'pipeline', 'deviceMap', 'context' or 'auto'",
     "schema:spec.strategy.type"),
    ("too-many-gpus", "data-text-to-image", {"spec.workers.gpusPerNode": 17},
     "spec.workers.gpusPerNode: Input should be less than or equal to 16", "schema:spec.workers.gpusPerNode"),
    ("bad-model-scheme", "data-text-to-image", {"spec.model.uri": "ftp://models/x"},
     "spec.model.uri: use s3://, gs://, az://, hf://org/name", "schema:spec.model.uri"),
    ("bad-dtype", "data-text-to-image", {"spec.model.dtype": "int8"},
     "spec.model.dtype: Input should be 'float32', 'float16' or 'bfloat16'", "schema:spec.model.dtype"),
    ("ratio-above-one", "data-text-to-image", {"spec.successPolicy": {"minSucceededRatio": 1.5}},
     "spec.successPolicy.minSucceededRatio: Input should be less than or equal to 1",
     "schema:spec.successPolicy.minSucceededRatio"),
    ("endpoint-without-scheme", "data-text-to-image", {"spec.output.endpointUrl": "minio:9000"},
     "spec.output.endpointUrl: String should match pattern", "schema:spec.output.endpointUrl"),
    ("no-output", "data-text-to-image", {"spec.output": DROP}, "spec.output: Field required", "schema:spec"),
    ("typo-field", "data-text-to-image", {"spec.workers.gpus": 1},
     "spec.workers.gpus: Extra inputs are not permitted", "strict"),
    ("prompts-and-uri", "data-text-to-image", {"spec.inputs.uri": "s3://prompts/a.jsonl"},
     "spec.inputs: set exactly one of inputs.prompts (inline list) or inputs.uri", "cel:set exactly one of"),
    ("no-inputs", "data-text-to-image", {"spec.inputs.prompts": DROP},
     "spec.inputs: set exactly one of inputs.prompts (inline list) or inputs.uri", "cel:set exactly one of"),
    ("context-without-block", "context-ulysses", {"spec.strategy.context": DROP},
     "spec.strategy.context: required when strategy.type is context", "cel:strategy.context (ringDegree"),
    ("context-degree-one", "context-ulysses", {"spec.strategy.context.ulyssesDegree": 1},
     "spec.strategy.context: ringDegree * ulyssesDegree must be at least 2", "cel:must be at least 2"),
    ("context-does-not-divide", "context-ulysses", {"spec.workers.nodes": 3},
     "spec.strategy.context: ringDegree * ulyssesDegree (2) must divide the world size (3 = ",
     "cel:must divide the world size"),
    ("context-for-text", "context-ring", {"spec.task.type": "text-generation"},
     "spec.strategy.type: context runs diffusers transformers: use task.type text-to-image",
     "cel:use task.type text-to-image"),
    ("nccl-on-cpu", "data-text-to-image", {"spec.rendezvous": {"backend": "nccl"}},
     "spec.rendezvous.backend: nccl needs GPUs: set workers.gpusPerNode > 0", "cel:nccl needs GPUs"),
    ("pipeline-one-process", "pipeline-gpt2", {"spec.workers.nodes": 1},
     "spec.strategy.type: pipeline needs at least 2 processes", "cel:pipeline needs at least 2 processes"),
    ("pipeline-for-images", "pipeline-gpt2", {"spec.task.type": "text-to-image", "spec.output.format": "png"},
     "spec.strategy.type: pipeline runs transformers models: use task.type text-generation",
     "cel:use task.type text-generation"),
    ("jsonl-for-images", "data-text-to-image", {"spec.output.format": "jsonl"},
     "spec.output.format: use jsonl for text-generation and png, jpeg or webp for text-to-image",
     "cel:use jsonl for text-generation"),
    ("device-map-two-processes", "device-map", {"spec.workers.processesPerNode": 2},
     "spec.workers.processesPerNode: strategy deviceMap runs one process per pod", "cel:runs one process per pod"),
    ("bad-name", "data-text-to-image", {"metadata.name": "Cats_1"},
     "metadata.name: use lowercase letters, digits and '-'", "builtin"),
    ("long-name", "data-text-to-image", {"metadata.name": "x" * 45},
     "metadata.name: at most 44 characters", "cel:at most 44 characters"),
    ("wrong-kind", "data-text-to-image", {"kind": "Job"}, "apiVersion/kind: expected kubeinfer.io/v1alpha1", "builtin"),
]


@pytest.mark.parametrize(("base", "edits", "message", "apiserver"),
                         [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_manifest_is_rejected_naming_the_field(
        base: str, edits: dict[str, Any], message: str, apiserver: str) -> None:
    manifest = edited(base, edits)
    with pytest.raises(SpecError) as caught:
        parse_manifest(manifest)
    assert any(problem.startswith(message) for problem in caught.value.problems), caught.value.problems
    kind, _, detail = apiserver.partition(":")
    if kind == "schema":
        assert detail in schema_errors(manifest)
    elif kind == "cel":
        assert any(detail in cel for cel in cel_messages()), f"no CEL rule says {detail!r}"
        assert schema_errors(manifest) == [], "CEL-only case: the structural schema alone accepts it"
