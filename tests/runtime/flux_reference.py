"""Plain diffusers' images of the strategy tests' items: what every image strategy must reproduce.

They are made in a fresh spawned process with one thread, like a rank: the deviceMap tests compare bit for
bit, and a test process that ran other pipelines before (other kernels, thread pools) can differ in the last
bit. Every test compares against items of `make_items(REFERENCE_ITEMS)`, so a run makes them once and its
xdist workers share the file (the once-per-run pattern pytest-xdist documents: the workers' common temp folder
and a lock): five spawned processes fewer, each a diffusers import and a pipeline load.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from strategy_harness import make_items

IMAGE_PARAMS = {"num_inference_steps": 2, "height": 32, "width": 32, "max_sequence_length": 16}
FLOAT_IMAGES = {"KUBEINFER_TEST_IMAGE_OUTPUT": "np"}
#: The reference covers items 0..REFERENCE_ITEMS-1 (an item's image depends only on its own prompt and seed).
REFERENCE_ITEMS = 3


def reference_images(model_dir: Path, items: list[dict[str, Any]]) -> dict[int, np.ndarray]:
    """`items` rendered by plain diffusers in a fresh process."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_reference_in_this_process, model_dir, items).result()


def _reference_in_this_process(model_dir: Path, items: list[dict[str, Any]]) -> dict[int, np.ndarray]:
    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(1)
    pipe = DiffusionPipeline.from_pretrained(model_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return {i["index"]: pipe(prompt=[i["prompt"]], generator=[torch.Generator().manual_seed(i["seed"])],
                             output_type="np", **IMAGE_PARAMS).images[0] for i in items}


def shared_reference(model_dir: Path, folder: Path) -> dict[int, np.ndarray]:
    """The reference images of `model_dir`, made by the first process of the run that asks, read by the others."""
    path = folder / f"flux-reference-{model_dir.name}.npz"
    with open(folder / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait for the one that renders
        if not path.exists():
            images = reference_images(model_dir, make_items(REFERENCE_ITEMS))
            partial = path.with_suffix(".partial.npz")
            np.savez(partial, **{str(index): image for index, image in images.items()})
            os.replace(partial, path)
    with np.load(path) as saved:
        return {int(key): saved[key] for key in saved.files}
