"""GPU benchmark: a FLUX.1-dev-sized transformer (random weights) at 1024x1024, runtime vs plain diffusers.

Needs one CUDA GPU with ~40 GiB. Builds the model once (real transformer and VAE configs, random
bf16 weights; small text encoders of the real widths, since the benchmark is about the denoiser),
saves it with `save_pretrained`, then times the same prompts, seeds and steps through
(a) a plain eager loop calling `FluxPipeline` directly and (b) `kubeinfer run` (data strategy, one
process, outputs written to a local directory), and with --compile / --attention-backend (c) `kubeinfer
run` with those `spec.runtime` options (its compile warm-up happens before the first item; the first item
is dropped from the timing anyway). Reports seconds per step and per image and the ratios; the target of
(c) is plain eager / kubeinfer >= 1.5.

    python bench/gpu_flux.py --model-dir /tmp/flux-full --steps 8 --images 3 --out bench/results \
        [--compile max-autotune-no-cudagraphs --compile-modules denoiser decoder --attention-backend _native_cudnn]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HEIGHT = WIDTH = 1024


def build_full_flux(out: Path) -> Path:
    """FLUX.1-dev transformer + VAE configs with random weights, built directly on the GPU in bf16."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from kubeinfer_runtime.tinymodels import VOCAB_SIZE, clip_tokenizer

    if (out / "model_index.json").exists():
        return out
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # build in bf16: an fp32 copy of 12B parameters would not fit
    with torch.device("cuda"):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
            axes_dims_rope=[16, 56, 56]).to(torch.bfloat16)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
            latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
            use_post_quant_conv=False).to(torch.bfloat16)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=VOCAB_SIZE, hidden_size=768, intermediate_size=1024, num_hidden_layers=1,
            num_attention_heads=12, projection_dim=768, max_position_embeddings=77, bos_token_id=512,
            eos_token_id=513, pad_token_id=513)).to(torch.bfloat16)
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=VOCAB_SIZE, d_model=4096, d_kv=64, d_ff=1024, num_layers=1, num_heads=8, pad_token_id=513,
            eos_token_id=513, decoder_start_token_id=513)).to(torch.bfloat16)
    torch.set_default_dtype(torch.float32)
    tokenizer = clip_tokenizer()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
                        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                        tokenizer_2=tokenizer, transformer=transformer)
    pipe.save_pretrained(out, max_shard_size="10GB")
    del pipe, transformer
    torch.cuda.empty_cache()
    return out


def prompts(n: int) -> list[str]:
    return [f"a photograph of benchmark subject number {i}" for i in range(n)]


def call_parameters(steps: int) -> dict[str, Any]:
    return {"num_inference_steps": steps, "height": HEIGHT, "width": WIDTH, "guidance_scale": 3.5,
            "max_sequence_length": 64}


def time_plain(model_dir: Path, steps: int, images: int) -> dict[str, float]:
    """A plain loop over FluxPipeline: per-image wall time, then per-step time from one call with step callbacks."""
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(model_dir, torch_dtype=torch.bfloat16).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    marks: list[float] = []

    def on_step(_pipe: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        torch.cuda.synchronize()
        marks.append(time.perf_counter())
        return kwargs

    pipe(prompts(1)[0], generator=torch.Generator("cpu").manual_seed(0), **call_parameters(2))  # warm-up
    per_image = []
    for index, prompt in enumerate(prompts(images)):  # timed like the runtime times an item: no callbacks
        torch.cuda.synchronize()
        start = time.perf_counter()
        pipe(prompt, generator=torch.Generator("cpu").manual_seed(index), **call_parameters(steps))
        torch.cuda.synchronize()
        per_image.append(time.perf_counter() - start)
    pipe(prompts(1)[0], generator=torch.Generator("cpu").manual_seed(0), callback_on_step_end=on_step,
         **call_parameters(steps))
    per_step = [b - a for a, b in itertools.pairwise(marks)]
    del pipe
    torch.cuda.empty_cache()
    return {"seconds_per_image": statistics.median(per_image), "seconds_per_step": statistics.median(per_step)}


def time_runtime(model_dir: Path, steps: int, images: int, work: Path,
                 runtime: dict[str, Any] | None = None) -> dict[str, float]:
    """`kubeinfer run` on the same prompts (with `spec.runtime` options); per-image seconds from its manifest."""
    manifest = {
        "apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference",
        "metadata": {"name": "gpu-flux-bench"},
        "spec": {
            "model": {"uri": str(model_dir), "dtype": "bfloat16"},
            "task": {"type": "text-to-image", "parameters": call_parameters(steps), "seed": 0},
            "inputs": {"prompts": ["warm-up", *prompts(images)]},
            "workers": {"nodes": 1, "gpusPerNode": 1},
            "output": {"uri": str(work / "out"), "contactSheet": False},
            **({"runtime": runtime} if runtime else {}),
        },
    }
    work.mkdir(parents=True, exist_ok=True)
    job = work / "job.yaml"
    job.write_text(yaml.safe_dump(manifest))
    subprocess.run([sys.executable, "-m", "kubeinfer_runtime.cli", "run", str(job), "--nproc", "1",
                    "--output", str(work / "out")], check=True)
    rows = [json.loads(line) for line in (work / "out" / "manifest.jsonl").read_text().splitlines()]
    seconds = [row["seconds"] for row in sorted(rows, key=lambda r: r["index"])][1:]  # drop the warm-up item
    return {"seconds_per_image": statistics.median(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/flux-full"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--compile", choices=["default", "reduce-overhead", "max-autotune",
                                              "max-autotune-no-cudagraphs"], help="spec.runtime.compile.mode")
    parser.add_argument("--compile-modules", nargs="+", choices=["denoiser", "decoder"], default=["denoiser"])
    parser.add_argument("--attention-backend", help="spec.runtime.attentionBackend (e.g. _native_cudnn, flash)")
    args = parser.parse_args()
    import torch

    started = time.perf_counter()
    build_full_flux(args.model_dir)
    built = time.perf_counter() - started
    plain = time_plain(args.model_dir, args.steps, args.images)
    runtime = time_runtime(args.model_dir, args.steps, args.images, args.out / "gpu-run")
    options = runtime_options(args)
    tuned = time_runtime(args.model_dir, args.steps, args.images, args.out / "gpu-run-tuned", options) if options \
        else None
    result = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "resolution": f"{WIDTH}x{HEIGHT}",
        "steps": args.steps, "images": args.images, "build_seconds": round(built, 1),
        "plain": plain, "runtime": runtime,
        "runtime_over_plain_throughput": plain["seconds_per_image"] / runtime["seconds_per_image"],
        "runtime_seconds_per_step_estimate": runtime["seconds_per_image"] / plain["seconds_per_image"]
        * plain["seconds_per_step"],
    }
    if tuned is not None:
        result.update(runtime_options=options, tuned=tuned,
                      plain_eager_over_tuned=plain["seconds_per_image"] / tuned["seconds_per_image"],
                      tuned_seconds_per_step_estimate=tuned["seconds_per_image"] / plain["seconds_per_image"]
                      * plain["seconds_per_step"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_flux.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    """spec.runtime from the command line (empty: no tuned run)."""
    options: dict[str, Any] = {}
    if args.compile:
        options["compile"] = {"mode": args.compile, "modules": args.compile_modules}
    if args.attention_backend:
        options["attentionBackend"] = args.attention_backend
    return options


if __name__ == "__main__":
    main()
