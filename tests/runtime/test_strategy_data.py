"""`data` strategy: 2 real gloo processes vs a single-process reference computed with the libraries directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flux_reference import IMAGE_PARAMS
from strategy_harness import Launcher, make_items, merged, run_inline

pytestmark = pytest.mark.runtime


def flux_spec(**strategy: Any) -> dict[str, Any]:
    return {"model": {"uri": "/m", "dtype": "float32"},
            "task": {"type": "text-to-image", "parameters": IMAGE_PARAMS},
            "strategy": {"type": "data", **strategy}, "workers": {"processesPerNode": 2}}


def reference_images(model_dir: Path, items: list[dict[str, Any]], batch_size: int = 1) -> dict[int, np.ndarray]:
    """Plain diffusers, one process: the same batches (cut from the global list), one generator per item."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(model_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    out: dict[int, np.ndarray] = {}
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        images = pipe(prompt=[i["prompt"] for i in batch], output_type="pil",
                      generator=[torch.Generator().manual_seed(i["seed"]) for i in batch], **IMAGE_PARAMS).images
        out.update({i["index"]: np.asarray(img) for i, img in zip(batch, images, strict=True)})
    return out


def assert_images_equal(got: dict[int, tuple[Any, str | None]], want: dict[int, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for index, (output, error) in got.items():
        assert error is None, error
        assert output.shape == (32, 32, 3)
        assert np.array_equal(output, want[index]), f"item {index} differs from the single-process run"


def test_images_bit_identical_uneven_one_empty(flux_dir: Path, run_strategy: Launcher) -> None:
    items = make_items(5)
    cases = {"uneven": items, "one": make_items(1, start=3), "empty": []}
    reports = run_strategy(flux_spec(), flux_dir, cases)
    want = reference_images(flux_dir, items)
    assert_images_equal(merged(reports, "uneven"), want)
    assert_images_equal(merged(reports, "one"), {3: want[3]})
    assert merged(reports, "empty") == {}
    assert [len(r["cases"]["uneven"]) for r in reports] == [3, 2], "split is not accelerate's contiguous split"
    assert len(np.unique([want[i].tobytes() for i in want])) == 5, "different seeds must give different images"


def test_images_batched_match_same_batches(flux_dir: Path, run_strategy: Launcher) -> None:
    items = make_items(5)
    reports = run_strategy(flux_spec(batchSize=2), flux_dir, {"b2": items})
    assert_images_equal(merged(reports, "b2"), reference_images(flux_dir, items, batch_size=2))


def test_unknown_task_parameter_is_a_clear_error(flux_dir: Path) -> None:
    spec = flux_spec()
    spec["task"] = {"type": "text-to-image", "parameters": {**IMAGE_PARAMS, "num_steps": 3}}
    with pytest.raises(ValueError, match=r"task.parameters: FluxPipeline does not take \['num_steps'\]"):
        run_inline(spec, flux_dir, make_items(1))
    spec["task"]["parameters"] = {**IMAGE_PARAMS, "generator": 1}
    with pytest.raises(ValueError, match=r"task.parameters: \['generator'\] are set by kubeinfer"):
        run_inline(spec, flux_dir, make_items(1))


def test_bad_item_parameter_fails_only_that_item(flux_dir: Path) -> None:
    items = make_items(2)
    items[1]["parameters"] = {"bogus": 1}
    results = run_inline(flux_spec(), flux_dir, items)
    assert results[0].error is None and results[0].output.size == (32, 32)
    assert results[1].output is None and "bogus" in results[1].error


def test_wrong_pipeline_class_is_a_clear_error(flux_dir: Path) -> None:
    spec = flux_spec()
    spec["model"]["pipeline"] = "StableDiffusionPipeline"
    with pytest.raises(ValueError, match=r"spec.model.pipeline: StableDiffusionPipeline needs components .*unet"):
        run_inline(spec, flux_dir, [])
    spec["model"]["pipeline"] = "NoSuchPipeline"
    with pytest.raises(ValueError, match=r"spec.model.pipeline: 'NoSuchPipeline' is not a diffusers pipeline"):
        run_inline(spec, flux_dir, [])


def test_not_a_pipeline_folder_is_a_clear_error(gpt2_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"spec.model.uri: .* has no model_index.json"):
        run_inline(flux_spec(), gpt2_dir, [])


def test_other_pipeline_class_from_model_index(sd_dir: Path) -> None:
    """A StableDiffusionPipeline (UNet) goes through the same generic path as Flux."""
    from diffusers import DiffusionPipeline

    items = make_items(2)
    spec = flux_spec()
    spec["task"]["parameters"] = {"num_inference_steps": 2, "height": 32, "width": 32}
    results = run_inline(spec, sd_dir, items)
    pipe = DiffusionPipeline.from_pretrained(sd_dir, dtype=torch.float32)
    for result in results:
        item = items[result.item.index]
        want = pipe(prompt=[item["prompt"]], generator=[torch.Generator().manual_seed(item["seed"])],
                    **spec["task"]["parameters"]).images[0]
        assert type(pipe).__name__ == "StableDiffusionPipeline"
        assert np.array_equal(np.asarray(result.output), np.asarray(want))


def reference_texts(model_dir: Path, items: list[dict[str, Any]]) -> dict[int, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    out = {}
    for item in items:
        params = {"max_new_tokens": 8, "do_sample": False, **item.get("parameters", {})}
        enc = tok(item["prompt"], return_tensors="pt")
        torch.manual_seed(item["seed"])
        with torch.inference_mode():
            ids = model.generate(**enc, pad_token_id=tok.pad_token_id, **params)
        out[item["index"]] = tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def test_text_generation_greedy_and_sampled(gpt2_dir: Path, run_strategy: Launcher) -> None:
    items = make_items(5)
    for item in items[3:]:
        item["parameters"] = {"do_sample": True, "top_k": 20}
    spec = {"model": {"uri": "/m", "dtype": "float32"},
            "task": {"type": "text-generation", "parameters": {"max_new_tokens": 8}},
            "strategy": {"type": "data"}, "workers": {"processesPerNode": 2}, "output": {"uri": "/o"}}
    got = merged(run_strategy(spec, gpt2_dir, {"t": items}), "t")
    want = reference_texts(gpt2_dir, items)
    assert {i: out for i, (out, _err) in got.items()} == want
    assert all(len(text) > 0 for text in want.values())


def reference_batched_texts(model_dir: Path, batches: list[list[dict[str, Any]]],
                            params: dict[str, Any]) -> dict[int, str]:
    """transformers itself on the same batches: left padding, an attention mask, one generate() per batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    out = {}
    for batch in batches:
        enc = tok([item["prompt"] for item in batch], return_tensors="pt", padding=True)
        assert batch[0]["prompt"] == batch[-1]["prompt"] or len(set(enc["attention_mask"].sum(1).tolist())) > 1
        torch.manual_seed(batch[0]["seed"])
        with torch.inference_mode():
            ids = model.generate(**enc, pad_token_id=tok.pad_token_id, **params)
        for item, row in zip(batch, ids[:, enc["input_ids"].shape[1]:], strict=True):
            out[item["index"]] = tok.decode(row, skip_special_tokens=True)
    return out


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_text_generation_batched_equals_generate_on_same_batches(sample: bool, gpt2_dir: Path,
                                                                 run_strategy: Launcher) -> None:
    """batchSize 4 over 2 processes: windows [0, 4) and [4, 6), prompts of different lengths padded left."""
    params = {"max_new_tokens": 8, "do_sample": sample, **({"top_k": 20} if sample else {})}
    items = make_items(6)
    spec = {"model": {"uri": "/m", "dtype": "float32"}, "task": {"type": "text-generation", "parameters": params},
            "strategy": {"type": "data", "batchSize": 4}, "workers": {"processesPerNode": 2}}
    reports = run_strategy(spec, gpt2_dir, {"t": items})
    got = {i: out for i, (out, err) in merged(reports, "t").items() if err is None}
    assert got == reference_batched_texts(gpt2_dir, [items[:4], items[4:]], params)
    assert [len(r["cases"]["t"]) for r in reports] == [4, 2], "one batch per process"
