"""init_distributed: explicit backend choice and the single-process path (multi-process runs in every launch)."""

from __future__ import annotations

import pytest
import torch

from kubeinfer_runtime.distributed import choose_backend, init_distributed

pytestmark = pytest.mark.runtime


def test_backend_choice_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_backend(None) == choose_backend("auto") == choose_backend("gloo") == "gloo"
    with pytest.raises(ValueError, match=r"rendezvous.backend: nccl needs a CUDA GPU"):
        choose_backend("nccl")
    with pytest.raises(ValueError, match=r"rendezvous.backend: unknown backend 'mpi'"):
        choose_backend("mpi")


def test_single_process_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate import PartialState

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed()
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (0, 1, 0)
    assert not torch.distributed.is_initialized()
    assert PartialState().num_processes == 1


def test_bad_env_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match=r"WORLD_SIZE='two' is not an integer"):
        init_distributed()
