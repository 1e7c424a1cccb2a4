"""Helpers for the local-run and resume tests: manifests, the `kubeinfer` CLI as a subprocess, a direct reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from strategy_harness import REPO

PARAMS = {"num_inference_steps": 2, "height": 32, "width": 32, "max_sequence_length": 16}


def manifest(name: str, model: str, inputs: dict[str, Any], params: dict[str, Any] | None = None,
             seed: int = 3, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"uri": model, "dtype": "float32"},
        "task": {"type": "text-to-image", "parameters": params or PARAMS, "seed": seed},
        "inputs": inputs, "output": {"uri": "/unused"}, **spec}
    return {"apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference", "metadata": {"name": name},
            "spec": body}


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def kubeinfer(*args: str, env: dict[str, str] | None = None, timeout: int = 400,
              background: bool = False) -> Any:
    """`kubeinfer ARGS` in a subprocess (the console script's module), like a user would run it."""
    path = os.pathsep.join(str(REPO / p) for p in ("api", "runtime"))
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "kubeinfer_runtime.cli", *args]
    if background:
        return subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)


def reference_pngs(model_dir: Path, prompts: list[str], seed: int, params: dict[str, Any],
                   batch: int = 1) -> list[bytes]:
    """What a user gets calling diffusers directly: prompts [k*batch, (k+1)*batch) in one call, each image's
    generator seeded with seed + index."""
    import io

    import torch
    from diffusers import FluxPipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run with OMP_NUM_THREADS=1; reductions must match bit for bit
    try:
        pipe = FluxPipeline.from_pretrained(model_dir, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        out = []
        for start in range(0, len(prompts), batch):
            indices = range(start, min(start + batch, len(prompts)))
            with torch.inference_mode():
                images = pipe(prompt=[prompts[i] for i in indices],
                              generator=[torch.Generator("cpu").manual_seed(seed + i) for i in indices],
                              **params).images
            for image in images:
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                out.append(buffer.getvalue())
        return out
    finally:
        torch.set_num_threads(threads)


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def upload_dir(s3: Any, bucket: str, prefix: str, folder: Path) -> None:
    """Copy a model folder into the S3 server with boto3 (independent of the code under test)."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
