"""Elastic data parallel's pure parts: chunk sizes, the epoch of the claims, a worker's slot."""

from __future__ import annotations

import pytest

from kubeinfer_api.jobconfig import make_job_config
from kubeinfer_api.validation import parse_spec
from kubeinfer_runtime.elastic import CHUNK_ENV, chunk_size, epoch_of, worker_slot


@pytest.mark.parametrize(("total", "workers", "batch", "task", "size"), [
    (1_000_000, 8, 1, "text-generation", 256),   # capped: a few seconds of work per claim
    (1_000_000, 8, 1, "text-to-image", 32),
    (48, 3, 4, "text-generation", 4),             # about four chunks per worker
    (10, 4, 1, "text-to-image", 1),
    (1_000, 2, 24, "text-generation", 144),       # whole batch windows, never a batch cut in two
    (0, 2, 8, "text-generation", 8),
])
def test_chunks_are_whole_batch_windows_small_enough_to_share(total: int, workers: int, batch: int, task: str,
                                                              size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHUNK_ENV, raising=False)
    assert chunk_size(total, workers, batch, task) == size
    assert size % batch == 0


def test_the_chunk_size_knob_is_rounded_up_to_whole_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHUNK_ENV, "10")
    assert chunk_size(1_000, 2, 4, "text-generation") == 12


def test_claims_belong_to_the_job_uid_or_to_one_local_run(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec({"model": {"uri": "/m"}, "inputs": {"prompts": ["x"]}, "output": {"uri": "/o"}})
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run-7")
    assert epoch_of(make_job_config("j", spec, uid="3f2a")) == "3f2a"
    assert epoch_of(make_job_config("j", spec, uid="local")) == "run-7"  # `kubeinfer run`


def test_a_replaced_pod_takes_its_predecessors_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEINFER_NODE_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert worker_slot() == 11
