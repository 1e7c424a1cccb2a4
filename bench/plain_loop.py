"""The baseline of bench/runtime_overhead.py: what a user would write by hand, run under the same torchrun.

Each process loads the same FluxPipeline, takes a contiguous share of the prompts, calls the pipeline
per prompt with a generator seeded like kubeinfer does, and saves PNGs to a local folder.

    torchrun --nproc-per-node N bench/plain_loop.py MODEL_DIR PROMPTS_JSON PARAMS_JSON SEED OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from diffusers import FluxPipeline


def main() -> None:
    model_dir, prompts_file, params_json, seed, out_dir = sys.argv[1:6]
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    prompts: list[str] = json.loads(Path(prompts_file).read_text())
    per, extra = divmod(len(prompts), world)
    start = rank * per + min(rank, extra)
    mine = range(start, start + per + (1 if rank < extra else 0))
    pipe = FluxPipeline.from_pretrained(model_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spans = []
    for index in mine:
        began, wall = time.perf_counter(), time.time()
        with torch.inference_mode():
            image = pipe(prompt=[prompts[index]], generator=[torch.Generator("cpu").manual_seed(int(seed) + index)],
                         **json.loads(params_json)).images[0]
        seconds = time.perf_counter() - began
        image.save(out / f"{index:05d}.png")
        spans.append({"start": wall, "end": time.time(), "seconds": seconds})
    (out / f"items-rank{rank}.json").write_text(json.dumps(spans))


if __name__ == "__main__":
    main()
