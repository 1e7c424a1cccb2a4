"""GPU check of the pipeline strategy's stages: traced once per prompt-length bucket, each rebound to one
device copy of its weights and built on the GPU; the loaded model never moves, and the greedy texts
equal transformers' `generate()` on the same GPU.

The pipeline's ranks talk over NCCL, one rank per GPU, and NCCL refuses two ranks on one GPU
("Duplicate GPU detected"). So this runs in one process: the stages of rank 0 and rank 1 are each
built by the strategy's own code (`PipelineParallel._schedule`) on `--device`, and the step the
P2P schedule would run is the two stage modules called in turn; everything else (bucketing, the
buffer, greedy decoding) is the strategy's `_generate`. On a machine with two GPUs, also run the
pipeline tests there (docs/development/index.md, "GPU checks").

`--without-rebinding` is the negative control: stages hold the loaded model's own parameters (the
behaviour before stages were rebound), so building a stage on the GPU moves them in place, and the
second bucket's trace must fail or the check must report the move.

    python bench/gpu_pipeline_check.py [--device cuda:0] [--out bench/results/gpu_pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]
for part in ("api", "runtime"):
    sys.path.insert(0, str(REPO / part))

from kubeinfer_api.jobconfig import JobConfig, make_job_config  # noqa: E402
from kubeinfer_api.validation import parse_spec  # noqa: E402
from kubeinfer_runtime import tinymodels  # noqa: E402
from kubeinfer_runtime.strategies import pipeline as pipeline_module  # noqa: E402
from kubeinfer_runtime.strategies.base import DistContext, Item, RunContext  # noqa: E402

NEW_TOKENS = 6
PROMPTS = ["a red fox", "the old lighthouse", "a bowl of ramen"]
LONG_PROMPT = " ".join(["the old lighthouse"] * 6)  # a second buffer length, so a second trace


def job_config(batch_size: int) -> JobConfig:
    spec = {"model": {"uri": "/m", "dtype": "float32"}, "inputs": {"prompts": ["x"]}, "output": {"uri": "/tmp/x"},
            "task": {"type": "text-generation", "parameters": {"max_new_tokens": NEW_TOKENS}},
            "strategy": {"type": "pipeline", "batchSize": batch_size}, "workers": {"processesPerNode": 2}}
    return JobConfig.model_validate_json(make_job_config("gpu-check", parse_spec(spec)).to_json())


def stage_strategies(model_dir: Path, device: str) -> list[pipeline_module.PipelineParallel]:
    """Rank 0's and rank 1's strategy, each loaded as that rank loads it, both placing stages on `device`."""
    job = job_config(batch_size=len(PROMPTS))
    ranks = []
    for rank in (0, 1):
        ctx = RunContext(job=job, dist=DistContext(rank=rank, world_size=2, local_rank=0, local_world_size=1,
                                                   device=device, backend="nccl"),
                         model_dir=model_dir, strategy="pipeline")
        strategy = pipeline_module.PipelineParallel(ctx)
        strategy.load()
        ranks.append(strategy)
    return ranks


def chain_stages(first: Any, last: Any) -> None:
    """Make `first._step` run both stages here, in place of the schedule's send and receive."""

    def step(_schedule: Any, buf: torch.Tensor, ends: list[int]) -> torch.Tensor:
        length = buf.shape[1]
        last._schedule(length)
        pieces = []
        for micro in buf.chunk(first.num_chunks):  # stages are traced for one micro-batch's shape
            hidden = first.schedules[length]._stage.submod(micro)
            out = last.schedules[length]._stage.submod(*(hidden if isinstance(hidden, tuple) else (hidden,)))
            pieces.append(out[0] if isinstance(out, tuple | list) else out)
        return pipeline_module.next_tokens(torch.cat(pieces), ends)

    first._step = step


def reference(model_dir: Path, prompts: list[str], device: str) -> list[str]:
    """Greedy `generate()` of the library itself, one prompt at a time, on the same device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = []
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt").to(device)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
        texts.append(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def check(model_dir: Path, device: str) -> dict[str, Any]:
    ranks = stage_strategies(model_dir, device)
    loaded_at = [{n: (p.device, p.data_ptr()) for n, p in s.model.named_parameters()} for s in ranks]
    chain_stages(*ranks)
    items = [Item(index=i, id=f"item-{i}", prompt=p, seed=i) for i, p in enumerate([*PROMPTS, LONG_PROMPT])]
    texts = ranks[0]._generate(items[:len(PROMPTS)])[0] + ranks[0]._generate(items[len(PROMPTS):])[0]
    want = reference(model_dir, [item.prompt for item in items], device)
    stage_devices = sorted({str(p.device) for s in ranks for sched in s.schedules.values()
                            for p in sched._stage.submod.parameters()})
    moved = sorted({name for s, at in zip(ranks, loaded_at, strict=True) for name, p in s.model.named_parameters()
                    if at[name] != (p.device, p.data_ptr())})
    return {"lengths": [sorted(s.schedules) for s in ranks], "stage_devices": stage_devices,
            "loaded_model_moved": moved, "texts_equal_generate": texts == want, "texts": texts, "generate": want}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--models", nargs="+", default=["gpt2", "llama"])
    parser.add_argument("--without-rebinding", action="store_true", help="negative control: the old stages")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.without_rebinding:
        pipeline_module.bind_to_device_copy = lambda *_args: None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:  # build_stage needs a process group: this process alone
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        report: dict[str, Any] = {"torch": torch.__version__, "device": args.device,
                                  "device_name": torch.cuda.get_device_name(args.device)
                                  if args.device.startswith("cuda") else "cpu",
                                  "rebinding": not args.without_rebinding, "models": {}}
        for kind in args.models:
            try:
                report["models"][kind] = check(tinymodels.cached(kind), args.device)
            except Exception as exc:  # the negative control is expected to land here
                report["models"][kind] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
        dist.destroy_process_group()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    passed = all(r.get("texts_equal_generate") and not r.get("loaded_model_moved")
                 and r.get("lengths") and all(len(x) == 2 for x in r["lengths"]) for r in report["models"].values())
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
