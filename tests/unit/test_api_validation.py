"""The Python mirror of the CRD's CEL rules: each bad spec is rejected with the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from kubeinfer_api.validation import SpecError, output_format, parse_manifest, parse_spec


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"uri": "s3://models/tiny"},
        "inputs": {"prompts": ["a dog"]},
        "output": {"uri": "s3://out/run/"},
    }
    for path, value in overrides.items():
        node = base
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return base


def test_minimal_spec_gets_defaults() -> None:
    parsed = parse_spec(spec())
    assert parsed.strategy.type == "data"
    assert parsed.workers.nodes == 1 and parsed.workers.gpus_per_node == 0
    assert parsed.rendezvous.port == 29500 and parsed.failure_policy.max_restarts == 3
    assert output_format(parsed) == "png"


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"workers__nodes": 0}, "spec.workers.nodes"),
    ({"model__uri": "ftp://x"}, "spec.model.uri"),
    ({"output__uri": "hf://org/outputs"}, "spec.output.uri"),
    ({"inputs": {"uri": "hf://org/prompts.jsonl"}}, "spec.inputs.uri"),
    ({"model__dtype": "int4"}, "spec.model.dtype"),
    ({"strategy__type": "tensor"}, "spec.strategy.type"),
    ({"workers__gpuPerNode": 1}, "spec.workers.gpuPerNode"),
    ({"inputs": {}}, "exactly one of inputs.prompts"),
    ({"inputs": {"prompts": []}}, "spec.inputs.prompts: list at least one prompt"),
    ({"inputs": {"prompts": ["a"], "uri": "s3://b/p.jsonl"}}, "exactly one of inputs.prompts"),
    ({"strategy__type": "context"}, "strategy.context: required"),
    ({"strategy__type": "context", "strategy__context": {"ulyssesDegree": 2}, "workers__nodes": 3},
     "must divide the world size (3"),
    ({"strategy__context": {"ringDegree": 1}}, "at least 2"),
    ({"strategy__type": "deviceMap", "strategy__elastic": True}, "spec.strategy.elastic: applies to type data"),
    ({"workers__nodes": 3, "workers__minNodes": 2}, "spec.workers.minNodes: applies to elastic data jobs only"),
    ({"workers__nodes": 2, "workers__minNodes": 3, "strategy__elastic": True},
     "spec.workers.minNodes: 3 is more than workers.nodes (2)"),
    ({"rendezvous__backend": "nccl"}, "nccl needs GPUs"),
    ({"strategy__type": "pipeline", "task__type": "text-generation"}, "pipeline needs at least 2 processes"),
    ({"strategy__type": "pipeline", "workers__nodes": 2}, "use task.type text-generation"),
    ({"strategy__type": "context", "strategy__context": {"ringDegree": 2}, "workers__nodes": 2,
      "task__type": "text-generation", "output__format": "jsonl"}, "use task.type text-to-image"),
    ({"task__type": "text-generation", "output__format": "png"}, "spec.output.format"),
    ({"output__format": "jsonl"}, "spec.output.format"),
    ({"strategy__type": "deviceMap", "workers__processesPerNode": 2}, "spec.workers.processesPerNode"),
    ({"successPolicy__minSucceededRatio": 1.5}, "spec.successPolicy.minSucceededRatio"),
    ({"failurePolicy__rules": [{"action": "FailJob"}]}, "spec.failurePolicy.rules[0]"),
    ({"model__cache": {}}, "spec.model.cache: set exactly one of claimName"),
    ({"task__type": "text-generation", "output__format": "jsonl", "runtime__attentionBackend": "native"},
     "spec.runtime: compile and attentionBackend apply to diffusers pipelines"),
    ({"runtime__attentionBackend": "native", "strategy__type": "context", "workers__nodes": 2,
      "strategy__context": {"ringDegree": 2, "attentionBackend": "flash"}}, "spec.runtime.attentionBackend"),
])
def test_bad_specs_name_the_field(overrides: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(spec(**overrides))
    assert expected in str(err.value)


def test_context_world_size_counts_processes_per_node() -> None:
    parsed = parse_spec(spec(strategy__type="context", strategy__context={"ringDegree": 2, "ulyssesDegree": 2},
                             workers__nodes=1, workers__gpusPerNode=4))
    assert parsed.strategy.context is not None and parsed.strategy.context.ring_degree == 2


@pytest.mark.parametrize(("manifest", "expected"), [
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": spec()}, "apiVersion/kind"),
    ({"apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference", "metadata": {"name": "Bad_Name"},
      "spec": spec()}, "metadata.name"),
    ({"apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference", "metadata": {"name": "a" * 45},
      "spec": spec()}, "at most 44"),
])
def test_bad_manifests(manifest: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_manifest(manifest)
    assert expected in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(spec(rendezvous__backend="nccl", output__format="jsonl"))
    assert len(err.value.problems) == 2
