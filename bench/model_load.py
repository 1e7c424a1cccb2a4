"""Model load at the storage's speed: kubeinfer's fetch + load against the best plain client, in one run.

A synthetic diffusers folder of about `--size-gb` GB (a Flux pipeline whose transformer is sharded
safetensors of random bytes; the other components are the tiny test model's) is uploaded to a MinIO
server started on this machine (tests/localcluster). Each round, alternating the two sides:

* raw S3: boto3's transfer manager (s3transfer), every object into a local folder, at the best of a
  few concurrency x part-size settings (tried in the first round, reused after);
* kubeinfer S3: `fetch_model` (parallel ranged reads into the cache) then `load_pipeline` to the CPU,
  every weight page touched (on CPU safetensors maps the fetched pages; touching makes the load real);
* local folder, page cache emptied for those files before each side: `cat` of every file to
  /dev/null, and kubeinfer's `fetch_model` (a local path: read-ahead in parallel) + `load_pipeline` +
  touch. On a VM the "disk" may be the host's page cache, so cold reads vary a lot between rounds.

Throughput is the model's bytes over wall time; the ratio is kubeinfer over the baseline (target
>= 0.8 for S3). Prints a table, writes bench/results/model_load.{json,md}, and deletes the synthetic
model, the fetched copies and MinIO's data at the end (unless --keep).

    python bench/model_load.py [--size-gb 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for folder in ("api", "runtime", "tests"):
    sys.path.insert(0, str(REPO / folder))
BUCKET = "bench-models"
PREFIX = "synthetic-flux"
MiB = 2**20
SETTINGS = [(4, 64), (8, 32), (10, 8), (16, 16), (16, 64), (32, 16)]  # (max_concurrency, multipart_chunksize MiB)


def transformer_config(size_gb: float) -> dict[str, Any]:
    """A Flux transformer of about `size_gb` GB in float32 (36 D^2 per double block, 15 D^2 per single)."""
    layers = max(1, round(size_gb / 2.0 * 8))
    return {"patch_size": 1, "in_channels": 4, "num_layers": layers, "num_single_layers": max(1, round(layers * 1.6)),
            "attention_head_dim": 64, "num_attention_heads": 16, "joint_attention_dim": 32,
            "pooled_projection_dim": 32, "axes_dims_rope": [16, 16, 32]}


def build_model(out: Path, size_gb: float) -> int:
    """The tiny Flux pipeline with a big random transformer (sharded like real checkpoints); returns bytes."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    from kubeinfer_runtime import tinymodels

    shutil.copytree(tinymodels.cached("flux"), out)
    folder = out / "transformer"
    shutil.rmtree(folder)
    folder.mkdir()
    config = transformer_config(size_gb)
    with init_empty_weights():
        model = FluxTransformer2DModel(**config)
    model.save_config(folder)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    shards: list[dict[str, Any]] = [{}]
    for name, shape in shapes.items():
        if sum(t.numel() * 4 for t in shards[-1].values()) > 500 * MiB:
            shards.append({})
        shards[-1][name] = torch.randn(shape, generator=generator)
    weight_map, total = {}, 0
    for index, shard in enumerate(shards, start=1):
        file = f"diffusion_pytorch_model-{index:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / file))
        weight_map.update(dict.fromkeys(shard, file))
        total += sum(t.numel() * 4 for t in shard.values())
        shard.clear()
    index_file = folder / "diffusion_pytorch_model.safetensors.index.json"
    index_file.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return folder_bytes(out)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def evict(folder: Path) -> None:
    """Drop these files from the page cache (only ours: the machine is shared)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def upload(s3: Any, model: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=8)
    for path in sorted(p for p in model.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"{PREFIX}/{path.relative_to(model).as_posix()}", Config=config)


def raw_download(s3: Any, dest: Path, concurrency: int, chunk_mib: int) -> float:
    """Every object through one s3transfer TransferManager (all files in flight at once)."""
    from boto3.s3.transfer import TransferConfig
    from s3transfer.manager import TransferManager

    config = TransferConfig(multipart_threshold=chunk_mib * MiB, multipart_chunksize=chunk_mib * MiB,
                            max_concurrency=concurrency)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
            for o in page.get("Contents", [])]
    began = time.perf_counter()
    with TransferManager(s3, config) as manager:
        futures = []
        for key in keys:
            target = dest / key
            target.parent.mkdir(parents=True, exist_ok=True)
            futures.append(manager.download(BUCKET, key, str(target)))
        for future in futures:
            future.result()
    return time.perf_counter() - began


def touch(pipe: Any) -> int:
    """Read one byte of every page of every weight (so a mapped, lazily read load is counted in full)."""
    import torch

    pages = 0
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            for tensor in list(module.parameters()) + list(module.buffers()):
                flat = tensor.detach().reshape(-1).view(torch.uint8)
                pages += int(flat[::4096].sum().item() >= 0)
    return pages


def kubeinfer_load(uri: str, cache: Path) -> tuple[float, float]:
    """(fetch seconds, load seconds) of the runtime's own path."""
    from kubeinfer_api.spec import ModelSource
    from kubeinfer_runtime.modelstore import fetch_model
    from kubeinfer_runtime.strategies.diffusion import load_pipeline

    source = ModelSource(uri=uri, dtype="float32")
    began = time.perf_counter()
    folder = fetch_model(source, cache=cache)
    fetched = time.perf_counter()
    pipe = load_pipeline(folder, source).to("cpu")
    touch(pipe)
    loaded = time.perf_counter()
    del pipe
    gc.collect()  # unmap the weights, so the next eviction can drop their pages
    return fetched - began, loaded - fetched


def cat(folder: Path) -> float:
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    began = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run(["cat", *files], stdout=null, check=True)
    return time.perf_counter() - began


def pick_setting(s3: Any, work: Path, model_bytes: int) -> tuple[tuple[int, int], dict[str, float]]:
    """The plain client's best setting on this machine (each tried once)."""
    speeds = {}
    for concurrency, chunk in SETTINGS:
        dest = work / "raw-probe"
        seconds = raw_download(s3, dest, concurrency, chunk)
        shutil.rmtree(dest)
        speeds[f"{concurrency}x{chunk}MiB"] = model_bytes / MiB / seconds
    best = max(SETTINGS, key=lambda s: speeds[f"{s[0]}x{s[1]}MiB"])
    return best, speeds


def one_round(s3: Any, work: Path, model: Path, best: tuple[int, int], flip: bool) -> dict[str, float]:
    """Both S3 sides and both local sides, in flipped order every other round (drift hits both)."""
    uri = f"s3://{BUCKET}/{PREFIX}"
    raw_dest, cache = work / "raw", work / "cache"
    result: dict[str, float] = {}

    def raw() -> None:
        result["raw_s3_s"] = raw_download(s3, raw_dest, *best)
        shutil.rmtree(raw_dest)

    def ours() -> None:
        fetch_s, load_s = kubeinfer_load(uri, cache)
        shutil.rmtree(cache)
        result.update(kubeinfer_fetch_s=fetch_s, kubeinfer_load_s=load_s, kubeinfer_s3_s=fetch_s + load_s)

    def plain_cat() -> None:
        evict(model)
        result["cat_s"] = cat(model)

    def local() -> None:
        evict(model)
        fetch_s, load_s = kubeinfer_load(str(model), cache)
        result["kubeinfer_local_s"] = fetch_s + load_s

    for side in ([ours, raw, local, plain_cat] if flip else [raw, ours, plain_cat, local]):
        side()
    return result


def warm_imports(model: Path) -> None:
    """Import and initialise the libraries once, untimed (the raw client's imports are not timed either)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from kubeinfer_api.spec import ModelSource
    from kubeinfer_runtime.strategies.diffusion import load_pipeline

    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()
        library.set_verbosity_error()
    source = ModelSource(uri=str(model), dtype="float32")
    load_pipeline(model, source, transformer=None)


def summarize(rounds: list[dict[str, float]], model_bytes: int) -> dict[str, Any]:
    def speeds(key: str) -> list[float]:
        return [model_bytes / MiB / r[key] for r in rounds]

    def ratios(ours: str, base: str) -> list[float]:
        return [r[base] / r[ours] for r in rounds]

    def stats(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3)}

    return {
        "raw_s3_mib_s": stats(speeds("raw_s3_s")), "kubeinfer_s3_mib_s": stats(speeds("kubeinfer_s3_s")),
        "kubeinfer_fetch_only_mib_s": stats(speeds("kubeinfer_fetch_s")),
        "ratio_s3": stats(ratios("kubeinfer_s3_s", "raw_s3_s")),
        "cat_mib_s": stats(speeds("cat_s")), "kubeinfer_local_mib_s": stats(speeds("kubeinfer_local_s")),
        "ratio_local": stats(ratios("kubeinfer_local_s", "cat_s")),
    }


def markdown(report: dict[str, Any]) -> str:
    s, m = report["summary"], report["model_mib"]
    rows = [("raw S3: boto3 transfer manager, best of settings (" + report["raw_setting"] + "), MiB/s",
             s["raw_s3_mib_s"], ""),
            ("kubeinfer S3: fetch + load to CPU, MiB/s", s["kubeinfer_s3_mib_s"], ""),
            ("kubeinfer S3: fetch alone, MiB/s", s["kubeinfer_fetch_only_mib_s"], ""),
            ("ratio kubeinfer / raw (S3)", s["ratio_s3"], ">= 0.8"),
            ("local folder: cat to /dev/null, MiB/s", s["cat_mib_s"], ""),
            ("local folder: kubeinfer load, MiB/s", s["kubeinfer_local_mib_s"], ""),
            ("ratio kubeinfer / cat (local)", s["ratio_local"], "")]
    lines = [f"Model load ({report['machine']}; synthetic Flux folder {m:.0f} MiB in {report['files']} files, "
             f"MinIO on this machine, {report['rounds']} rounds; median [min, max])", "",
             "| measure | value | target |", "| --- | --- | --- |"]
    lines += [f"| {name} | {v['median']} [{v['min']}, {v['max']}] | {target} |" for name, v, target in rows]
    lines += ["", "Command: `" + report["command"] + "`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic model and MinIO data")
    args = parser.parse_args()
    from localcluster.s3 import S3Server

    work = Path(tempfile.mkdtemp(prefix="model-load-", dir=os.environ.get("KUBEINFER_BENCH_DIR")))
    server = None
    try:
        model = work / "model"
        model_bytes = build_model(model, args.size_gb)
        server = S3Server(work / "minio").start()
        s3 = server.client()
        s3.create_bucket(Bucket=BUCKET)
        upload(s3, model)
        os.environ.update(server.env())
        warm_imports(model)
        best, probe = pick_setting(s3, work, model_bytes)
        rounds = [one_round(s3, work, model, best, flip=bool(i % 2)) for i in range(args.rounds)]
        report = {"machine": machine(), "model_mib": model_bytes / MiB, "rounds": args.rounds,
                  "files": sum(1 for p in model.rglob("*") if p.is_file()),
                  "raw_setting": f"{best[0]} threads x {best[1]} MiB parts", "raw_probe_mib_s": probe,
                  "per_round": rounds, "summary": summarize(rounds, model_bytes),
                  "command": f"make bench-model-load (python bench/model_load.py --size-gb {args.size_gb} "
                             f"--rounds {args.rounds})"}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "model_load.json").write_text(json.dumps(report, indent=1))
        (args.out / "model_load.md").write_text(markdown(report))
        print(markdown(report))
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def machine() -> str:
    import torch

    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}"


if __name__ == "__main__":
    main()
