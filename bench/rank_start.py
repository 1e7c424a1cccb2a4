"""Rank start on CPU: torchrun (each rank a new interpreter) vs kubeinfer's launcher (ranks forked from it),
without and with the task's libraries preloaded in the launcher (KUBEINFER_PRELOAD, as the worker sets it).

The same tiny Flux job (the rank module, its job.json, 4 prompts) is started each way with 1 and 2
processes, alternated (A B C A B C) in this one invocation. Reported per variant: wall seconds and CPU
seconds of the whole process tree (launcher and ranks), and its ratio to torchrun. All produce the same
images (checked each round).

Writes bench/results/rank_start.json and bench/results/rank_start.md. Not a test: figures, not assertions.

    python bench/rank_start.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: variant -> (launcher module, whether the launcher preloads the task's libraries)
VARIANTS = {"torchrun": ("torch.distributed.run", False), "forkrun": ("kubeinfer_runtime.forkrun", False),
            "forkrun + preload": ("kubeinfer_runtime.forkrun", True)}
PARAMS = {"num_inference_steps": 2, "height": 32, "width": 32, "max_sequence_length": 16}


def job_file(model: str, nproc: int, out: Path, work: Path) -> Path:
    from kubeinfer_runtime.cli import local_job

    manifest = {"apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference", "metadata": {"name": "start"},
                "spec": {"model": {"uri": model, "dtype": "float32"},
                         "task": {"type": "text-to-image", "parameters": PARAMS, "seed": 42},
                         "inputs": {"prompts": [f"a lighthouse number {i}" for i in range(4)]},
                         "output": {"uri": str(out) + "/", "format": "png", "contactSheet": False}}}
    path = work / f"job-{nproc}.json"
    path.write_text(local_job(manifest, nproc, str(out) + "/").to_json())
    return path


def run_once(launcher: str, preload: bool, job: Path, nproc: int, out: Path, work: Path) -> dict[str, float]:
    """Wall and CPU seconds of one launch, launcher and ranks together."""
    from kubeinfer_runtime.launch import PRELOAD_ENV, QUIET, preload_env

    shutil.rmtree(out, ignore_errors=True)
    run_dir = Path(tempfile.mkdtemp(dir=work))
    env = os.environ | QUIET | {"KUBEINFER_JOB_FILE": str(job), "KUBEINFER_ATTEMPT": "0", "KUBEINFER_PROGRESS": "off",
                                "KUBEINFER_RUN_DIR": str(run_dir), "OMP_NUM_THREADS": "1"}
    env |= preload_env("text-to-image") if preload else {PRELOAD_ENV: ""}
    argv = [sys.executable, "-u", "-m", launcher, "--max-restarts", "0", "--standalone", "--nnodes", "1",
            "--nproc-per-node", str(nproc), "-m", "kubeinfer_runtime.rank"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_seconds": wall, "cpu_seconds": cpu}


def images(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (out / "items").glob("*.png")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from kubeinfer_runtime import tinymodels

    model = str(tinymodels.cached("flux"))
    work = Path(tempfile.mkdtemp(prefix="kubeinfer-rank-start-"))
    runs: dict[int, dict[str, list[dict[str, float]]]] = {}
    for nproc in (1, 2):
        for _ in range(args.rounds):
            outputs = []
            for name, (launcher, preload) in VARIANTS.items():
                out = work / "out"
                job = job_file(model, nproc, out, work)
                run = run_once(launcher, preload, job, nproc, out, work)
                runs.setdefault(nproc, {}).setdefault(name, []).append(run)
                outputs.append(images(out))
            assert len(outputs[0]) == 4 and all(o == outputs[0] for o in outputs), "the variants' images differ"
    shutil.rmtree(work, ignore_errors=True)

    cores = os.cpu_count() or 1
    summary: dict[str, Any] = {"cores": cores, "rounds": args.rounds, "processes": {}}
    lines = ["# Rank start: torchrun vs kubeinfer's launcher (forked ranks, then the task's libraries preloaded)", "",
             f"`python bench/rank_start.py --rounds {args.rounds}` on {cores} cores; the rank module on a tiny "
             "Flux job of 4 prompts, launcher and ranks together, medians.", "",
             "| processes | launcher | wall s | CPU s |", "|---|---|---|---|"]
    for nproc, variants in runs.items():
        medians = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_seconds", "cpu_seconds")}
                   for name, rs in variants.items()}
        ratios = {name: {k: m[k] / medians["torchrun"][k] for k in ("wall_seconds", "cpu_seconds")}
                  for name, m in medians.items() if name != "torchrun"}
        summary["processes"][nproc] = {"medians": medians, "over_torchrun": ratios, "runs": variants}
        lines += [f"| {nproc} | {name} | {m['wall_seconds']:.1f} | {m['cpu_seconds']:.1f} |"
                  for name, m in medians.items()]
        lines += [f"| {nproc} | {name} / torchrun | {r['wall_seconds']:.2f} | {r['cpu_seconds']:.2f} |"
                  for name, r in ratios.items()]
    results = REPO / "bench" / "results"
    (results / "rank_start.json").write_text(json.dumps(summary, indent=1) + "\n")
    (results / "rank_start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
