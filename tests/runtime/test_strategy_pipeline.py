"""`pipeline` strategy: 2 real gloo stages vs `model.generate` (greedy) in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from strategy_harness import Launcher, make_items, merged

from kubeinfer_runtime.strategies.pipeline import (
    auto_split_points,
    burned_devices,
    check_parameters,
    check_split_points,
    retarget_positional_devices,
    stage_graphs,
    unwrap_inner_no_grad,
)

pytestmark = pytest.mark.runtime
NEW_TOKENS = 6


def lm_spec(**pipeline: Any) -> dict[str, Any]:
    return {"model": {"uri": "/m", "dtype": "float32"},
            "task": {"type": "text-generation", "parameters": {"max_new_tokens": NEW_TOKENS}},
            "strategy": {"type": "pipeline", "pipeline": pipeline}, "workers": {"processesPerNode": 2}}


def load(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval(), \
        AutoTokenizer.from_pretrained(model_dir)


def reference(model_dir: Path, items: list[dict[str, Any]]) -> dict[int, str]:
    model, tok = load(model_dir)
    out = {}
    for item in items:
        enc = tok(item["prompt"], return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
        out[item["index"]] = tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def texts(reports: list[dict[str, Any]], case: str) -> dict[int, str]:
    got = merged(reports, case)
    assert all(err is None for _out, err in got.values())
    return {index: out for index, (out, _err) in got.items()}


@pytest.mark.parametrize(("kind", "options", "owner"), [
    ("gpt2", {}, 1),                                            # auto split, output on the last stage
    ("llama", {"splitPoints": ["model.layers.2"], "numChunks": 2, "gatherOutput": True}, 0),
])
def test_greedy_tokens_equal_generate(kind: str, options: dict[str, Any], owner: int, run_strategy: Launcher,
                                      request: pytest.FixtureRequest) -> None:
    model_dir = request.getfixturevalue(f"{kind}_dir")
    items = make_items(5)
    reports = run_strategy(lm_spec(**options), model_dir, {"uneven": items, "one": make_items(1), "empty": []})
    want = reference(model_dir, items)
    assert texts(reports, "uneven") == want
    assert texts(reports, "one") == {0: want[0]}
    assert texts(reports, "empty") == {}
    assert [len(r["cases"]["uneven"]) > 0 for r in reports] == [owner == 0, owner == 1], "wrong rank owns outputs"
    assert len(set(want.values())) > 1


def record_loaded_weights(strategy: Any) -> None:
    """KUBEINFER_TEST_AFTER_LOAD: where the loaded model's tensors are before any stage is built."""
    strategy.loaded_at = {name: (p.device, p.data_ptr()) for name, p in strategy.model.named_parameters()}


def stage_weights_probe(strategy: Any) -> dict[str, Any]:
    """KUBEINFER_TEST_PROBE: the traced lengths, whether a stage holds the loaded model's own Parameters,
    whether every traced stage uses one copy of the weights, and whether the loaded model moved."""
    loaded = {id(p) for p in strategy.model.parameters()}
    stages = [schedule._stage.submod for schedule in strategy.schedules.values()]
    return {"lengths": sorted(strategy.schedules),
            "holds_loaded": sum(id(p) in loaded for stage in stages for p in stage.parameters()),
            "copies": len({frozenset(p.data_ptr() for p in stage.parameters()) for stage in stages}),
            "moved": [name for name, p in strategy.model.named_parameters()
                      if strategy.loaded_at[name] != (p.device, p.data_ptr())]}


def test_stages_never_hold_the_loaded_model(gpt2_dir: Path, run_strategy: Launcher) -> None:
    """Two buffer lengths are traced; building a stage moves it to the rank's device, so a stage holding the
    loaded model's Parameters would move them in place and the next trace would mix devices (on GPUs)."""
    long_prompt = [{**make_items(1)[0], "prompt": " ".join(["the old lighthouse"] * 2)}]
    cases = {"short": make_items(2), "long": long_prompt}
    env = {"KUBEINFER_TEST_AFTER_LOAD": "test_strategy_pipeline:record_loaded_weights",
           "KUBEINFER_TEST_PROBE": "test_strategy_pipeline:stage_weights_probe"}
    reports = run_strategy(lm_spec(), gpt2_dir, cases, env=env)
    assert texts(reports, "short") == reference(gpt2_dir, cases["short"])
    assert texts(reports, "long") == reference(gpt2_dir, long_prompt)
    for report in reports:
        probe = report["probe"]
        assert len(probe["lengths"]) == 2, f"two prompt-length buckets expected: {probe['lengths']}"
        assert probe["holds_loaded"] == 0, "a traced stage holds the loaded model's Parameters"
        assert probe["copies"] == 1, "each traced length made its own copy of the stage's weights"
        assert probe["moved"] == []


def test_devices_burned_into_a_trace_point_at_the_stage_device(llama_dir: Path) -> None:
    """Traced on the CPU, Llama's rotary embedding records `x.to(y.device)` as `aten.to.device(x, cpu)`; a stage
    built on a GPU must not keep running it on the CPU (the GPU run: bench/gpu_pipeline_check.py)."""
    from torch.distributed.pipelining import SplitPoint, pipeline

    model = load(llama_dir)[0]
    model.config.use_cache = False
    unwrap_inner_no_grad(model)
    pipe = pipeline(model, mb_args=(torch.zeros(1, 16, dtype=torch.long),),
                    split_spec={"model.layers.2": SplitPoint.BEGINNING})
    stage, target = pipe.get_stage_module(0), torch.device("meta")

    def other_devices() -> list[str]:
        return [node.name for graph in stage_graphs(stage) for node in burned_devices(graph, target)]

    burned = other_devices()
    assert burned, "the trace no longer burns a device into a positional argument: revisit this test"
    assert retarget_positional_devices(stage, target) == len(burned)
    assert other_devices() == []


@pytest.mark.parametrize(("kind", "blocks"), [("gpt2", "transformer.h"), ("llama", "model.layers")])
def test_auto_split_cuts_between_blocks(kind: str, blocks: str, request: pytest.FixtureRequest) -> None:
    model = load(request.getfixturevalue(f"{kind}_dir"))[0]
    assert auto_split_points(model, 2)[0] in {f"{blocks}.{i}" for i in range(1, 4)}
    three = auto_split_points(model, 3)
    assert len(three) == 2 and three[0] != three[1]


def test_bad_options_are_clear_errors(gpt2_dir: Path) -> None:
    model = load(gpt2_dir)[0]
    with pytest.raises(ValueError, match=r"splitPoints: \['transformer.h.9'\] are not modules of GPT2LMHeadModel"):
        check_split_points(model, ["transformer.h.9"], 2)
    with pytest.raises(ValueError, match=r"2 points make 3 stages but there are 2 processes"):
        check_split_points(model, ["transformer.h.1", "transformer.h.2"], 2)
    with pytest.raises(ValueError, match=r"do_sample: strategy pipeline generates greedily"):
        check_parameters({"do_sample": True})
    with pytest.raises(ValueError, match=r"supports only max_new_tokens .* \['top_k'\]"):
        check_parameters({"top_k": 3})
