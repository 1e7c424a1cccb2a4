"""Planning: world size, process layout and data-parallel groups from a spec; `auto` resolution.

Pure functions, shared by the operator (status.plan, env) and the runtime (`kubeinfer run`, auto).
"""

from __future__ import annotations

from typing import Literal

from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_api.status import Plan

#: Weights plus activations and CUDA context must fit: keep this share of a device free.
MEMORY_HEADROOM = 1.3


def processes_per_node(spec: DistributedInferenceSpec) -> int:
    workers = spec.workers
    if workers.processes_per_node is not None:
        return workers.processes_per_node
    if workers.gpus_per_node > 0 and spec.strategy.type != "deviceMap":
        return workers.gpus_per_node
    return 1


def world_size(spec: DistributedInferenceSpec) -> int:
    return spec.workers.nodes * processes_per_node(spec)


def backend(spec: DistributedInferenceSpec) -> Literal["nccl", "gloo"]:
    chosen = spec.rendezvous.backend
    if chosen == "auto":
        return "nccl" if spec.workers.gpus_per_node > 0 else "gloo"
    return chosen


def group_size(spec: DistributedInferenceSpec, strategy: str) -> int:
    """Processes that together make one replica of the model."""
    if strategy == "pipeline":
        return world_size(spec)
    if strategy == "context" and spec.strategy.context is not None:
        return spec.strategy.context.ring_degree * spec.strategy.context.ulysses_degree
    return 1


def build_plan(spec: DistributedInferenceSpec, strategy: str | None = None, explanation: str = "") -> Plan:
    """The layout of a job; `strategy` overrides spec.strategy.type once `auto` is resolved."""
    chosen = strategy or spec.strategy.type
    size = group_size(spec, chosen)
    world = world_size(spec)
    if not explanation:
        explanation = _explain(spec, chosen, world, size)
    return Plan(strategy=chosen, world_size=world, nodes=spec.workers.nodes,
                processes_per_node=processes_per_node(spec), groups=world // size, group_size=size,
                backend=backend(spec), explanation=explanation)


def _explain(spec: DistributedInferenceSpec, strategy: str, world: int, size: int) -> str:
    if strategy == "auto":
        return "resolved by the workers from the model size and device memory"
    if strategy == "pipeline":
        return f"one {world}-stage pipeline"
    if strategy == "deviceMap":
        return f"{spec.workers.nodes} replicas, each spread over {max(spec.workers.gpus_per_node, 1)} device(s)"
    if strategy == "context":
        return f"{world // size} replicas of {size} context-parallel ranks"
    return f"{world} data-parallel replicas"


def resolve_auto(spec: DistributedInferenceSpec, model_bytes: int,
                 device_memory_bytes: int | None) -> tuple[str, str]:
    """Pick a strategy for `auto` from the weights' size and one device's memory (None: CPU)."""
    need = int(model_bytes * MEMORY_HEADROOM)
    gib = 1024**3
    if device_memory_bytes is None or need <= device_memory_bytes:
        where = "CPU memory" if device_memory_bytes is None else f"one device ({device_memory_bytes / gib:.1f} GiB)"
        return "data", f"weights {model_bytes / gib:.2f} GiB fit on {where}: every process is a replica"
    per_node = max(spec.workers.gpus_per_node, 1) * device_memory_bytes
    if spec.task.type == "text-to-image" and need <= per_node:
        if processes_per_node(spec) != 1:  # the pods are already launched with one process per GPU
            raise ValueError(
                f"model needs ~{need / gib:.1f} GiB, more than one device ({device_memory_bytes / gib:.1f} GiB), "
                f"but fits on a node's {spec.workers.gpus_per_node} devices: set workers.processesPerNode: 1 "
                "(or strategy.type: deviceMap) so that one process per pod spreads the model over its GPUs")
        return "deviceMap", (f"weights {model_bytes / gib:.2f} GiB exceed one device but fit on a node's "
                             f"{spec.workers.gpus_per_node} devices: one replica per pod")
    if spec.task.type == "text-generation" and world_size(spec) >= 2:
        return "pipeline", (f"weights {model_bytes / gib:.2f} GiB exceed one device: one pipeline over "
                            f"{world_size(spec)} processes")
    raise ValueError(f"model needs ~{need / gib:.1f} GiB but a device has {device_memory_bytes / gib:.1f} GiB "
                     "and no strategy can split it with this layout: add GPUs (workers.gpusPerNode) or nodes")
