"""`context` strategy: real gloo context-parallel groups vs plain diffusers in one process (within 1e-5)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from strategy_harness import Launcher, make_items, merged, run_inline

pytestmark = pytest.mark.runtime

IMAGE_PARAMS = {"num_inference_steps": 2, "height": 32, "width": 32, "max_sequence_length": 16}
FLOAT_IMAGES = {"KUBEINFER_TEST_IMAGE_OUTPUT": "np"}


def cp_spec(nproc: int, **context: Any) -> dict[str, Any]:
    return {"model": {"uri": "/m", "dtype": "float32"},
            "task": {"type": "text-to-image", "parameters": IMAGE_PARAMS},
            "strategy": {"type": "context", "context": context}, "workers": {"processesPerNode": nproc}}


def reference(model_dir: Path, items: list[dict[str, Any]]) -> dict[int, np.ndarray]:
    """Plain diffusers in a fresh process with one thread, like a rank: the deviceMap test compares bit for bit,
    and a test worker that ran other pipelines before (other kernels, thread pools) can differ in the last bit."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_reference_in_this_process, model_dir, items).result()


def _reference_in_this_process(model_dir: Path, items: list[dict[str, Any]]) -> dict[int, np.ndarray]:
    from diffusers import DiffusionPipeline

    torch.set_num_threads(1)
    pipe = DiffusionPipeline.from_pretrained(model_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return {i["index"]: pipe(prompt=[i["prompt"]], generator=[torch.Generator().manual_seed(i["seed"])],
                             output_type="np", **IMAGE_PARAMS).images[0] for i in items}


def assert_close(got: dict[int, tuple[Any, str | None]], want: dict[int, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for index, (output, error) in got.items():
        assert error is None, error
        assert output.shape == want[index].shape == (32, 32, 3)
        diff = float(np.abs(output - want[index]).max())
        assert diff <= 1e-5, f"item {index}: max diff {diff}"


@pytest.mark.parametrize("context", [{"ulyssesDegree": 2}, {"ringDegree": 2}], ids=["ulysses", "ring"])
def test_one_group_matches_single_process(context: dict[str, int], flux_dir: Path, run_strategy: Launcher) -> None:
    items = make_items(3)
    reports = run_strategy(cp_spec(2, **context), flux_dir, {"three": items, "one": make_items(1), "empty": []},
                           env=FLOAT_IMAGES)
    want = reference(flux_dir, items)
    assert_close(merged(reports, "three"), want)
    assert_close(merged(reports, "one"), {0: want[0]})
    assert merged(reports, "empty") == {}
    assert [len(r["cases"]["three"]) for r in reports] == [3, 0], "the group leader owns the outputs"


def test_two_groups_are_replicas(flux_dir: Path, run_strategy: Launcher) -> None:
    """4 processes = 2 groups of ulysses 2: items split between groups, fewer items than groups works."""
    items = make_items(3)
    reports = run_strategy(cp_spec(4, ulyssesDegree=2), flux_dir, {"three": items, "one": make_items(1)},
                           nproc=4, env=FLOAT_IMAGES)
    want = reference(flux_dir, items)
    assert_close(merged(reports, "three"), want)
    assert_close(merged(reports, "one"), {0: want[0]})
    assert [len(r["cases"]["three"]) for r in reports] == [2, 0, 1, 0]


def fail_item_one_on_rank_one(strategy: Any) -> None:
    """KUBEINFER_TEST_AFTER_LOAD: rank 1 computes item 1 with its group, then fails it (rank 0 does not)."""
    if strategy.ctx.dist.rank != 1:
        return
    compute = strategy.compute

    def failing(batch: list[Any]) -> list[Any]:
        outputs = compute(batch)
        if any(item.index == 1 for item in batch):
            raise RuntimeError("injected failure on rank 1")
        return outputs

    strategy.compute = failing


def test_a_failure_on_one_rank_fails_the_item_on_every_rank(flux_dir: Path, run_strategy: Launcher) -> None:
    """A ring group of 2 whose second rank fails item 1: the leader reports item 1 failed with that rank's error
    (not its own, successful image) and the group stays in step for the items after it."""
    items = make_items(3)
    env = {**FLOAT_IMAGES, "KUBEINFER_TEST_AFTER_LOAD": "test_strategy_context:fail_item_one_on_rank_one"}
    reports = run_strategy(cp_spec(2, ringDegree=2), flux_dir, {"three": items}, env=env)
    got = merged(reports, "three")
    assert got[1] == (None, "context group rank 1: RuntimeError: injected failure on rank 1")
    want = reference(flux_dir, [items[0], items[2]])
    assert_close({i: got[i] for i in (0, 2)}, want)


def test_ulysses_degree_must_divide_heads(flux_dir: Path) -> None:
    from kubeinfer_runtime.strategies.context import check_heads

    class Config:
        num_attention_heads = 3

    class Transformer:
        config = Config()

    with pytest.raises(ValueError, match=r"ulyssesDegree: 2 does not divide the model's 3 attention heads"):
        check_heads(Transformer(), 2)
    with pytest.raises(ValueError, match=r"ringDegree \* ulyssesDegree \(2\) must be at least 2 and divide"):
        run_inline(cp_spec(1, ulyssesDegree=2) | {"workers": {"processesPerNode": 2}}, flux_dir, [])
