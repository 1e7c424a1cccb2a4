"""`deviceMap` strategy: 2 pods (one process each) with staged loading vs a plain pipeline call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flux_reference import FLOAT_IMAGES, IMAGE_PARAMS
from strategy_harness import Launcher, make_items, merged, run_inline

from kubeinfer_runtime.strategies.device_map import parse_max_memory

pytestmark = pytest.mark.runtime


def dm_spec(nodes: int = 2, **device_map: Any) -> dict[str, Any]:
    return {"model": {"uri": "/m", "dtype": "float32"},
            "task": {"type": "text-to-image", "parameters": IMAGE_PARAMS},
            "strategy": {"type": "deviceMap", "deviceMap": device_map}, "workers": {"nodes": nodes}}


def test_staged_pods_equal_plain_pipeline(flux_dir: Path, run_strategy: Launcher,
                                          flux_reference: dict[int, np.ndarray]) -> None:
    items = make_items(3)
    spec = dm_spec(placement="balanced", maxMemory={"0": "1GiB", "cpu": "4GiB"})
    spec["strategy"]["batchSize"] = 1
    reports = run_strategy(spec, flux_dir, {"three": items, "one": make_items(1), "empty": []}, env=FLOAT_IMAGES)
    for case, expected in (("three", flux_reference), ("one", {0: flux_reference[0]})):
        got = merged(reports, case)
        assert sorted(got) == sorted(expected)
        for index, (output, error) in got.items():
            assert error is None, error
            assert np.array_equal(output, expected[index]), f"item {index} differs from the plain pipeline"
    assert merged(reports, "empty") == {}
    assert [len(r["cases"]["three"]) for r in reports] == [2, 1], "pods are data-parallel replicas"


def test_unstaged_equals_plain_pipeline(flux_dir: Path, flux_reference: dict[int, np.ndarray]) -> None:
    items = make_items(2)
    results = run_inline(dm_spec(nodes=1, stagedLoading=False), flux_dir, items)
    for result in results:
        assert result.error is None, result.error
        want = (flux_reference[result.item.index] * 255).round().astype("uint8")
        assert np.array_equal(np.asarray(result.output), want)


def test_text_generation_with_device_map(gpt2_dir: Path) -> None:
    from test_strategy_data import reference_texts

    items = make_items(2)
    spec = {"model": {"uri": "/m", "dtype": "float32"},
            "task": {"type": "text-generation", "parameters": {"max_new_tokens": 8}},
            "strategy": {"type": "deviceMap", "deviceMap": {"placement": "sequential"}}}
    results = run_inline(spec, gpt2_dir, items)
    assert {r.item.index: r.output for r in results} == reference_texts(gpt2_dir, items)


def test_text_generation_batched_with_device_map(gpt2_dir: Path) -> None:
    from test_strategy_data import reference_batched_texts

    items = make_items(3)
    spec = {"model": {"uri": "/m", "dtype": "float32"},
            "task": {"type": "text-generation", "parameters": {"max_new_tokens": 8}},
            "strategy": {"type": "deviceMap", "batchSize": 2}}
    results = run_inline(spec, gpt2_dir, items)
    want = reference_batched_texts(gpt2_dir, [items[:2], items[2:]], {"max_new_tokens": 8, "do_sample": False})
    assert {r.item.index: r.output for r in results} == want


def test_max_memory_keys() -> None:
    assert parse_max_memory({"0": "70GiB", "1": "70GiB", "cpu": "200GiB"}, gpus=1) == {0: "70GiB", "cpu": "200GiB"}
    with pytest.raises(ValueError, match=r"deviceMap.maxMemory: key 'gpu0' must be a GPU index"):
        parse_max_memory({"gpu0": "1GiB"}, gpus=1)


def test_non_flux_pipeline_loads_unstaged(sd_dir: Path) -> None:
    """Staging is Flux-only; a StableDiffusionPipeline loads whole and still equals the plain pipeline."""
    from diffusers import DiffusionPipeline

    params = {"num_inference_steps": 2, "height": 32, "width": 32}
    spec = dm_spec(nodes=1)
    spec["task"]["parameters"] = params
    items = make_items(1)
    (result,) = run_inline(spec, sd_dir, items)
    pipe = DiffusionPipeline.from_pretrained(sd_dir, dtype=torch.float32)
    want = pipe(prompt=[items[0]["prompt"]], generator=[torch.Generator().manual_seed(items[0]["seed"])],
                **params).images[0]
    assert np.array_equal(np.asarray(result.output), np.asarray(want))
