"""`context`: groups of ring x ulysses ranks share one image's sequence; groups are data-parallel replicas.

The world is a device mesh (dp, ring, ulysses); diffusers' `ContextParallelConfig` gets the
(ring, ulysses) part, so each group's collectives stay inside the group. Every rank of a group runs
the same batches with the same per-item generators (hence the same latents) and ends with the
whole image; the group's first rank owns the outputs. CPU/gloo needs two narrow patches
(`cpu_support`), so CI can test the real thing.

A rank that fails a batch must not run ahead into the next batch's collectives while its peers are
still in this one (their tensors would mix silently). After every batch the group agrees, on a
separate gloo group, on one outcome: if any rank failed, every rank fails that batch with the same
error. A rank that dies inside the collectives leaves its peers waiting until the collective
timeout, then the attempt restarts from the ledger; it never mixes batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_runtime.strategies.base import Item, Result, Strategy, register
from kubeinfer_runtime.strategies.common import iter_batches, timed_results, windows_for_replica
from kubeinfer_runtime.strategies.cpu_support import enable_cpu_flash_lse, nonzero_device_count
from kubeinfer_runtime.strategies.data import Compute, image_compute
from kubeinfer_runtime.strategies.diffusion import apply_runtime, load_pipeline, warm_up


def attention_backend(requested: str, device: str, ring_degree: int) -> str:
    """`auto`: a backend that works here; ring needs one returning the log-sum-exp (not `native`)."""
    if requested != "auto":
        return requested
    if ring_degree > 1:
        return "_native_flash" if device == "cpu" else "_native_cudnn"
    return "native"


def context_backend(spec: DistributedInferenceSpec) -> str:
    """strategy.context.attentionBackend unless auto, then spec.runtime.attentionBackend, then auto (the CRD
    rejects two different explicit values)."""
    own = spec.strategy.context.attention_backend if spec.strategy.context else "auto"
    return own if own != "auto" else spec.runtime.attention_backend or "auto"


def check_heads(transformer: Any, ulysses_degree: int) -> None:
    heads = getattr(transformer.config, "num_attention_heads", None)
    if heads is not None and heads % ulysses_degree:
        raise ValueError(f"spec.strategy.context.ulyssesDegree: {ulysses_degree} does not divide the model's "
                         f"{heads} attention heads; use a divisor of {heads} (or raise ringDegree instead)")


def agree(results: list[Result], group: Any, ranks: list[int]) -> list[Result]:
    """The group's one decision for a batch: this rank's results, or every item failed with the first
    failing rank's error."""
    import torch.distributed as dist

    error = next((r.error for r in results if r.error), None)
    errors: list[str | None] = [None] * len(ranks)
    dist.all_gather_object(errors, error, group=group)
    failed = next(((rank, e) for rank, e in zip(ranks, errors, strict=True) if e), None)
    if failed is None:
        return results
    message = f"context group rank {failed[0]}: {failed[1]}"
    return [Result(item=r.item, error=message, seconds=r.seconds) for r in results]


def agreement_groups(groups: int, size: int, group: int) -> tuple[Any, list[int]]:
    """A gloo group per context group (every rank creates all of them, in order); this rank's and its ranks."""
    import torch.distributed as dist

    mine: Any = None
    for index in range(groups):
        ranks = list(range(index * size, (index + 1) * size))
        created = dist.new_group(ranks, backend="gloo")
        if index == group:
            mine = created
    return mine, list(range(group * size, (group + 1) * size))


@register
class ContextParallel(Strategy):
    name = "context"
    compute: Compute
    pipe: Any = None

    def load(self) -> None:
        from diffusers import ContextParallelConfig
        from torch.distributed.device_mesh import init_device_mesh

        spec, dist = self.ctx.job.spec, self.ctx.dist
        options = spec.strategy.context
        if spec.task.type != "text-to-image" or options is None:
            raise ValueError("spec.strategy.context: context runs diffusers transformers: use task.type "
                             "text-to-image and set strategy.context (ringDegree, ulyssesDegree)")
        ring, ulysses = options.ring_degree, options.ulysses_degree
        size = ring * ulysses
        if size < 2 or dist.world_size % size:
            raise ValueError(f"spec.strategy.context: ringDegree * ulyssesDegree ({size}) must be at least 2 and "
                             f"divide the world size ({dist.world_size})")
        self.groups, self.group = dist.world_size // size, dist.rank // size
        self.leader = dist.rank % size == 0
        self.agreement, self.group_ranks = agreement_groups(self.groups, size, self.group)
        pipe = load_pipeline(self.ctx.model_dir, spec.model).to(dist.device)
        pipe.set_progress_bar_config(disable=True)
        transformer = getattr(pipe, "transformer", None)
        if transformer is None or not hasattr(transformer, "enable_parallelism"):
            raise ValueError(f"spec.model: {type(pipe).__name__} has no diffusers transformer to run context "
                             "parallel; use strategy data or deviceMap")
        check_heads(transformer, ulysses)
        backend = attention_backend(context_backend(spec), dist.device, ring)
        device_type = "cpu" if dist.device == "cpu" else "cuda"
        if device_type == "cpu" and backend == "_native_flash":
            enable_cpu_flash_lse()
        mesh = init_device_mesh(device_type, (self.groups, ring, ulysses), mesh_dim_names=("dp", "ring", "ulysses"))
        transformer.set_attention_backend(backend)
        with nonzero_device_count(device_type == "cpu"):
            transformer.enable_parallelism(config=ContextParallelConfig(ring_degree=ring, ulysses_degree=ulysses,
                                                                        mesh=mesh))
        self.pipe = apply_runtime(pipe, spec.runtime, attention=False)  # the backend is set above
        self.compute = image_compute(pipe, spec.task.parameters, self.output_type)

    def run(self, items: Sequence[Item]) -> Iterator[Result]:
        """This group's contiguous share of the global batches; only the leader yields."""
        spec = self.ctx.job.spec
        warm_up(self.pipe, spec, items)  # every rank, the same batch: the group's collectives match
        size = spec.strategy.batch_size
        share = windows_for_replica(items, size, self.group, self.groups)
        for batch in iter_batches(share, size, spec.task.parameters):
            results = list(timed_results(batch, lambda batch=batch: self.compute(batch)))  # type: ignore[misc]
            results = agree(results, self.agreement, self.group_ranks)
            if self.leader:
                yield from results
