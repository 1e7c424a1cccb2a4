"""Validation with messages that name the field and the fix.

`parse_manifest` is what `kubeinfer run`, `kubeinfer validate` and the operator use; the cross-field
rules mirror the CEL rules of the CRD, so a local run and the apiserver reject the same specs.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kubeinfer_api import API_VERSION, KIND
from kubeinfer_api.naming import MAX_JOB_NAME
from kubeinfer_api.plan import processes_per_node, world_size
from kubeinfer_api.spec import STORE_URI_PATTERN, URI_PATTERN, DistributedInferenceSpec

#: What to write instead, for the URI patterns (pydantic would only quote the regex).
PATTERN_HINTS = {
    URI_PATTERN: "use s3://, gs://, az://, hf://org/name, file:///path or an absolute path",
    STORE_URI_PATTERN: "use s3://, gs://, az://, file:///path or an absolute path (hf:// serves models only)",
}

#: The fix, for errors whose pydantic message names none: (field path..., error type) -> hint.
FIELD_HINTS = {
    ("inputs", "prompts", "too_short"): "list at least one prompt, or use inputs.uri (a JSONL file)",
}


class SpecError(ValueError):
    """A spec that can never run; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _field(loc: tuple[int | str, ...]) -> str:
    return "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def _message(error: Any) -> str:
    hint = PATTERN_HINTS.get((error.get("ctx") or {}).get("pattern", ""))
    if hint:
        return f"{hint} (got {error['input']!r})"
    return FIELD_HINTS.get((*error["loc"], error["type"]), str(error["msg"]))


def parse_spec(raw: dict[str, Any]) -> DistributedInferenceSpec:
    """Parse and check a spec; raise SpecError naming each bad field."""
    try:
        spec = DistributedInferenceSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError([f"{_field(e['loc'])}: {_message(e)}" for e in err.errors()]) from None
    problems = cross_field_problems(spec) + failure_rule_problems(spec)
    if problems:
        raise SpecError(problems)
    return spec


def parse_manifest(manifest: dict[str, Any]) -> tuple[str, DistributedInferenceSpec]:
    """(name, spec) of a DistributedInference manifest."""
    problems = []
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        problems.append(f"apiVersion/kind: expected {API_VERSION} {KIND}")
    name = str((manifest.get("metadata") or {}).get("name", ""))
    problems += name_problems(name)
    if problems:
        raise SpecError(problems)
    return name, parse_spec(manifest.get("spec") or {})


def name_problems(name: str) -> list[str]:
    import re

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name or ""):
        return ["metadata.name: use lowercase letters, digits and '-' (a DNS label)"]
    if len(name) > MAX_JOB_NAME:
        return [f"metadata.name: at most {MAX_JOB_NAME} characters (pod names derive from it)"]
    return []


def cross_field_problems(spec: DistributedInferenceSpec) -> list[str]:
    """The CRD's CEL rules, in Python."""
    problems = []
    strategy, task, world = spec.strategy, spec.task.type, world_size(spec)
    if (spec.inputs.prompts is None) == (spec.inputs.uri is None):
        problems.append("spec.inputs: set exactly one of inputs.prompts (inline list) or inputs.uri (a JSONL file)")
    if strategy.type == "context" and strategy.context is None:
        problems.append("spec.strategy.context: required when strategy.type is context "
                        "(set ringDegree and/or ulyssesDegree)")
    if strategy.context is not None:
        degree = strategy.context.ring_degree * strategy.context.ulysses_degree
        if degree < 2:
            problems.append("spec.strategy.context: ringDegree * ulyssesDegree must be at least 2")
        elif world % degree:
            problems.append(f"spec.strategy.context: ringDegree * ulyssesDegree ({degree}) must divide the "
                            f"world size ({world} = workers.nodes * processes per node)")
    if strategy.elastic and strategy.type != "data":
        problems.append("spec.strategy.elastic: applies to type data only (the other strategies need every rank "
                        "at once); remove it or use type data")
    min_nodes = spec.workers.min_nodes
    if min_nodes is not None and not strategy.elastic:
        problems.append("spec.workers.minNodes: applies to elastic data jobs only (strategy.elastic: true); the "
                        "other strategies need every worker at once")
    if min_nodes is not None and min_nodes > spec.workers.nodes:
        problems.append(f"spec.workers.minNodes: {min_nodes} is more than workers.nodes ({spec.workers.nodes})")
    cache = spec.model.cache
    if cache is not None and (cache.claim_name is None) == (cache.host_path is None):
        problems.append("spec.model.cache: set exactly one of claimName (a PersistentVolumeClaim, ReadWriteMany to "
                        "share it between nodes) or hostPath (a node-local directory the cluster admin allows)")
    problems += runtime_problems(spec)
    if spec.rendezvous.backend == "nccl" and spec.workers.gpus_per_node == 0:
        problems.append("spec.rendezvous.backend: nccl needs GPUs: set workers.gpusPerNode > 0 or backend gloo/auto")
    if strategy.type == "pipeline" and world < 2:
        problems.append("spec.strategy.type: pipeline needs at least 2 processes (workers.nodes * processes per node)")
    if strategy.type == "pipeline" and task != "text-generation":
        problems.append("spec.strategy.type: pipeline runs transformers models: use task.type text-generation")
    if strategy.type == "context" and task != "text-to-image":
        problems.append("spec.strategy.type: context runs diffusers transformers: use task.type text-to-image")
    fmt = spec.output.format
    if fmt is not None and (task == "text-generation") != (fmt == "jsonl"):
        problems.append("spec.output.format: use jsonl for text-generation and png, jpeg or webp for text-to-image")
    if strategy.type == "deviceMap" and processes_per_node(spec) != 1:
        problems.append("spec.workers.processesPerNode: strategy deviceMap runs one process per pod: "
                        "remove it or set it to 1")
    return problems


def failure_rule_problems(spec: DistributedInferenceSpec) -> list[str]:
    """failurePolicy.rules: the CRD's rule that each matches on something, and patterns that compile
    (Python regular expressions, which the apiserver cannot check)."""
    import re

    problems = []
    for i, rule in enumerate(spec.failure_policy.rules):
        where = f"spec.failurePolicy.rules[{i}]"
        if rule.on_reasons is None and rule.on_message_patterns is None:
            problems.append(f"{where}: set onReasons, onMessagePatterns or both")
        for j, pattern in enumerate(rule.on_message_patterns or []):
            try:
                re.compile(pattern)
            except re.error as err:
                problems.append(f"{where}.onMessagePatterns[{j}]: not a regular expression ({err}): {pattern!r}")
    return problems


def runtime_problems(spec: DistributedInferenceSpec) -> list[str]:
    runtime, context = spec.runtime, spec.strategy.context
    problems = []
    if spec.task.type != "text-to-image" and (runtime.compile or runtime.attention_backend):
        problems.append("spec.runtime: compile and attentionBackend apply to diffusers pipelines: use task.type "
                        "text-to-image (or remove them)")
    if (runtime.attention_backend and context is not None and context.attention_backend != "auto"
            and context.attention_backend != runtime.attention_backend):
        problems.append(f"spec.runtime.attentionBackend: {runtime.attention_backend} differs from "
                        f"strategy.context.attentionBackend {context.attention_backend}; set the backend once, in "
                        "runtime.attentionBackend, and leave strategy.context.attentionBackend auto")
    return problems


def output_format(spec: DistributedInferenceSpec) -> str:
    """The effective output format (its default depends on the task)."""
    if spec.output.format:
        return spec.output.format
    return "jsonl" if spec.task.type == "text-generation" else "png"
