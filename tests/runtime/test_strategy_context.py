"""`context` strategy: real gloo context-parallel groups vs plain diffusers in one process (within 1e-5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flux_reference import FLOAT_IMAGES, IMAGE_PARAMS
from strategy_harness import Launcher, make_items, merged, run_inline

pytestmark = pytest.mark.runtime


def cp_spec(nproc: int, **context: Any) -> dict[str, Any]:
    return {"model": {"uri": "/m", "dtype": "float32"},
            "task": {"type": "text-to-image", "parameters": IMAGE_PARAMS},
            "strategy": {"type": "context", "context": context}, "workers": {"processesPerNode": nproc}}


def assert_close(got: dict[int, tuple[Any, str | None]], want: dict[int, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for index, (output, error) in got.items():
        assert error is None, error
        assert output.shape == want[index].shape == (32, 32, 3)
        diff = float(np.abs(output - want[index]).max())
        assert diff <= 1e-5, f"item {index}: max diff {diff}"


@pytest.mark.parametrize("context", [{"ulyssesDegree": 2}, {"ringDegree": 2}], ids=["ulysses", "ring"])
def test_one_group_matches_single_process(context: dict[str, int], flux_dir: Path, run_strategy: Launcher,
                                          flux_reference: dict[int, np.ndarray]) -> None:
    items = make_items(3)
    reports = run_strategy(cp_spec(2, **context), flux_dir, {"three": items, "one": make_items(1), "empty": []},
                           env=FLOAT_IMAGES)
    assert_close(merged(reports, "three"), flux_reference)
    assert_close(merged(reports, "one"), {0: flux_reference[0]})
    assert merged(reports, "empty") == {}
    assert [len(r["cases"]["three"]) for r in reports] == [3, 0], "the group leader owns the outputs"


def test_two_groups_are_replicas(flux_dir: Path, run_strategy: Launcher, flux_reference: dict[int, np.ndarray]) -> None:
    """4 processes = 2 groups of ulysses 2: items split between groups, fewer items than groups works."""
    items = make_items(3)
    reports = run_strategy(cp_spec(4, ulyssesDegree=2), flux_dir, {"three": items, "one": make_items(1)},
                           nproc=4, env=FLOAT_IMAGES)
    assert_close(merged(reports, "three"), flux_reference)
    assert_close(merged(reports, "one"), {0: flux_reference[0]})
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


def test_a_failure_on_one_rank_fails_the_item_on_every_rank(flux_dir: Path, run_strategy: Launcher,
                                                            flux_reference: dict[int, np.ndarray]) -> None:
    """A ring group of 2 whose second rank fails item 1: the leader reports item 1 failed with that rank's error
    (not its own, successful image) and the group stays in step for the items after it."""
    items = make_items(3)
    env = {**FLOAT_IMAGES, "KUBEINFER_TEST_AFTER_LOAD": "test_strategy_context:fail_item_one_on_rank_one"}
    reports = run_strategy(cp_spec(2, ringDegree=2), flux_dir, {"three": items}, env=env)
    got = merged(reports, "three")
    assert got[1] == (None, "context group rank 1: RuntimeError: injected failure on rank 1")
    assert_close({i: got[i] for i in (0, 2)}, {i: flux_reference[i] for i in (0, 2)})


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
