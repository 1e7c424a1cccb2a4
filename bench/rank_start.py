"""Rank start on CPU: torchrun (each rank a new interpreter) vs kubeinfer's launcher (ranks forked from it).

The same tiny Flux job (the rank module, its job.json, 4 prompts) is started both ways with 1 and 2
processes, alternated (A B A B) in this one invocation. Reported per variant: wall seconds and CPU
seconds of the whole process tree (launcher and ranks), and the ratio forkrun / torchrun. Both produce
the same images (checked each round).

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
LAUNCHERS = {"torchrun": "torch.distributed.run", "forkrun": "kubeinfer_runtime.forkrun"}
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


def run_once(launcher: str, job: Path, nproc: int, out: Path, work: Path) -> dict[str, float]:
    """Wall and CPU seconds of one launch, launcher and ranks together."""
    shutil.rmtree(out, ignore_errors=True)
    run_dir = Path(tempfile.mkdtemp(dir=work))
    env = os.environ | {"KUBEINFER_JOB_FILE": str(job), "KUBEINFER_ATTEMPT": "0", "KUBEINFER_PROGRESS": "off",
                        "KUBEINFER_RUN_DIR": str(run_dir), "OMP_NUM_THREADS": "1"}
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
            for name, launcher in LAUNCHERS.items():
                out = work / "out"
                job = job_file(model, nproc, out, work)
                runs.setdefault(nproc, {}).setdefault(name, []).append(run_once(launcher, job, nproc, out, work))
                outputs.append(images(out))
            assert outputs[0] == outputs[1] and len(outputs[0]) == 4, "the two launchers' images differ"
    shutil.rmtree(work, ignore_errors=True)

    cores = os.cpu_count() or 1
    summary: dict[str, Any] = {"cores": cores, "rounds": args.rounds, "processes": {}}
    lines = ["# Rank start: torchrun vs kubeinfer's launcher (forked ranks)", "",
             f"`python bench/rank_start.py --rounds {args.rounds}` on {cores} cores; the rank module on a tiny "
             "Flux job of 4 prompts, launcher and ranks together, medians.", "",
             "| processes | launcher | wall s | CPU s |", "|---|---|---|---|"]
    for nproc, variants in runs.items():
        medians = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_seconds", "cpu_seconds")}
                   for name, rs in variants.items()}
        ratios = {k: medians["forkrun"][k] / medians["torchrun"][k] for k in ("wall_seconds", "cpu_seconds")}
        summary["processes"][nproc] = {"medians": medians, "forkrun_over_torchrun": ratios, "runs": variants}
        lines += [f"| {nproc} | {name} | {m['wall_seconds']:.1f} | {m['cpu_seconds']:.1f} |"
                  for name, m in medians.items()]
        lines += [f"| {nproc} | forkrun / torchrun | {ratios['wall_seconds']:.2f} | {ratios['cpu_seconds']:.2f} |"]
    results = REPO / "bench" / "results"
    (results / "rank_start.json").write_text(json.dumps(summary, indent=1) + "\n")
    (results / "rank_start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
