"""Process-group set-up under torchrun: explicit backend, bounded timeout, a cheap preflight.

accelerate's plain `PartialState()` silently stays single-process under torchrun on CPU (every rank
would then run every item), so the backend is chosen here from the hardware and accelerate is told
(`PartialState(cpu=True)`) to use the group this module created.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from kubeinfer_runtime.strategies.base import DistContext


class PreflightError(RuntimeError):
    """The first all-reduce did not add up: the ranks do not form the group they think they do."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def choose_backend(requested: str | None) -> str:
    """nccl on CUDA, gloo on CPU; a request for nccl without CUDA is an error, not a silent fallback."""
    cuda = torch.cuda.is_available()
    if requested in (None, "", "auto"):
        return "nccl" if cuda else "gloo"
    if requested == "nccl" and not cuda:
        raise ValueError("rendezvous.backend: nccl needs a CUDA GPU but none is visible; use gloo or auto")
    if requested not in ("nccl", "gloo"):
        raise ValueError(f"rendezvous.backend: unknown backend {requested!r}; use auto, nccl or gloo")
    return requested


def init_distributed(backend: str | None = None, timeout_s: int = 600) -> DistContext:
    """Join the torchrun group (or run alone when WORLD_SIZE is unset) and check it with an all-reduce."""
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", 1)
    chosen = choose_backend(backend)
    device = local_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=chosen, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s),
                                device_id=torch.device(device) if chosen == "nccl" else None)
        _preflight(world, device if chosen == "nccl" else "cpu")
    _sync_accelerate(device)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world,
                       device=device, backend=chosen)


def local_device(local_rank: int) -> str:
    """The GPU of this local rank (even when the user asked for gloo), else the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    device = f"cuda:{local_rank % torch.cuda.device_count()}"
    torch.cuda.set_device(device)
    return device


def local_context() -> DistContext:
    """An elastic worker: this process alone, no group (its peers may come and go), on its local device."""
    local_rank = _env_int("LOCAL_RANK", 0)
    return DistContext(rank=0, world_size=1, local_rank=local_rank, local_world_size=_env_int("LOCAL_WORLD_SIZE", 1),
                       device=local_device(local_rank), backend="gloo")


def _preflight(world: int, device: str) -> None:
    probe = torch.ones(1, device=device)
    dist.all_reduce(probe)
    if int(probe.item()) != world:
        raise PreflightError(f"preflight all-reduce gave {int(probe.item())}, expected WORLD_SIZE={world}")


def _sync_accelerate(device: str) -> None:
    """Make accelerate's shared state describe the group above (its CPU default would be 1 process)."""
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    expected = dist.get_world_size() if dist.is_initialized() else 1
    if state.num_processes != expected:
        raise RuntimeError(f"accelerate sees {state.num_processes} processes but torch.distributed has {expected}")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown_distributed() -> None:
    """Leave the group cleanly so peers do not wait for a timeout."""
    if dist.is_initialized():
        dist.destroy_process_group()
