"""CPU threads per process: torch's default (one per core of the machine) vs the operator's OMP_NUM_THREADS.

A CPU worker pod gets OMP_NUM_THREADS = its CPU request split over its processes (1 for the default
500m). Here one `kubeinfer run --nproc 1` of a tiny Flux job is run both ways, alternated (A B A B) in
this one invocation: on a quiet machine, and on a busy one (one spinning process per core, as on a
shared node). Reported per variant: wall seconds, CPU seconds of the whole process tree, and the ratio
of the operator's setting over torch's default.

Writes bench/results/cpu_threads.json and bench/results/cpu_threads.md. Not a test: figures, not assertions.

    python bench/cpu_threads.py [--prompts 12] [--rounds 2]
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"num_inference_steps": 4, "height": 64, "width": 64, "max_sequence_length": 16}
VARIANTS = {"torch default": None, "operator (500m: 1 thread)": "1"}


def manifest(model: str, prompts: int) -> dict[str, Any]:
    return {"apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference", "metadata": {"name": "threads"},
            "spec": {"model": {"uri": model, "dtype": "float32"},
                     "task": {"type": "text-to-image", "parameters": PARAMS, "seed": 42},
                     "inputs": {"prompts": [f"a lighthouse number {i}" for i in range(prompts)]},
                     "strategy": {"type": "data"}, "workers": {"nodes": 1, "processesPerNode": 1},
                     "output": {"uri": "/tmp/unused/", "format": "png"}}}


def run_once(job: Path, out: Path, threads: str | None) -> dict[str, float]:
    """Wall and CPU seconds (the launcher, torchrun and the rank) of one local run."""
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"KUBEINFER_PROGRESS": "off"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("kubeinfer")), "run", str(job), "--output", str(out)],
                   env=env, check=True, capture_output=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_seconds": wall, "cpu_seconds": cpu}


@contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """`count` processes spinning at 100%: the other tenants of a shared node."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from kubeinfer_runtime import tinymodels

    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="kubeinfer-threads-"))
    job = work / "job.yaml"
    job.write_text(yaml.safe_dump(manifest(str(tinymodels.cached("flux")), args.prompts)))
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for load, spinners in (("quiet machine", 0), (f"busy machine ({cores} spinning processes)", cores)):
        with busy_cores(spinners):
            for _ in range(args.rounds):
                for name, threads in VARIANTS.items():
                    runs.setdefault(load, {}).setdefault(name, []).append(run_once(job, work / "out", threads))
    shutil.rmtree(work, ignore_errors=True)

    summary: dict[str, Any] = {"cores": cores, "prompts": args.prompts, "rounds": args.rounds, "loads": {}}
    lines = ["# CPU threads per process: torch's default vs the operator's OMP_NUM_THREADS", "",
             f"`python bench/cpu_threads.py --prompts {args.prompts} --rounds {args.rounds}` on {cores} cores; "
             "one `kubeinfer run --nproc 1` of a tiny Flux job, medians.", "",
             "| machine | variant | wall s | CPU s |", "|---|---|---|---|"]
    for load, variants in runs.items():
        medians = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_seconds", "cpu_seconds")}
                   for name, rs in variants.items()}
        default, ours = (medians[name] for name in VARIANTS)
        ratios = {k: ours[k] / default[k] for k in ("wall_seconds", "cpu_seconds")}
        summary["loads"][load] = {"medians": medians, "operator_over_default": ratios, "runs": variants}
        lines += [f"| {load} | {name} | {m['wall_seconds']:.1f} | {m['cpu_seconds']:.1f} |"
                  for name, m in medians.items()]
        lines += [f"| {load} | operator / default | {ratios['wall_seconds']:.2f} | {ratios['cpu_seconds']:.2f} |"]
    results = REPO / "bench" / "results"
    (results / "cpu_threads.json").write_text(json.dumps(summary, indent=1) + "\n")
    (results / "cpu_threads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
