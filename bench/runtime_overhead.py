"""Runtime overhead on CPU: `kubeinfer run` (data strategy) vs a plain diffusers loop, and S3 upload overlap.

Same tiny Flux model, prompts, seeds, process count and torchrun in every variant, run in this one
invocation and alternated (A B A B) so machine noise hits both sides:

* throughput: items/s from the first item's start to the last item's end (what the runtime adds
  around the compute: encoding, upload, ledger, progress), kubeinfer over plain (target >= 0.97);
  the whole-run wall time (process start-up and model load included) is reported beside it;
* upload overlap: wall time writing to a real S3 server (MinIO, tests/localcluster) over writing to
  a local folder (target <= 1.03).

Writes bench/results/runtime.json and bench/results/runtime.md. Not a test: figures, not assertions.

    python bench/runtime_overhead.py [--prompts 24] [--nproc 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
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

import yaml

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"num_inference_steps": 8, "height": 128, "width": 128, "max_sequence_length": 16}
SEED = 7


def env() -> dict[str, str]:
    path = os.pathsep.join(str(REPO / p) for p in ("api", "runtime", "tests"))
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "KUBEINFER_PROGRESS": "off"}


def timed(argv: list[str], extra_env: dict[str, str] | None = None) -> float:
    began = time.perf_counter()
    subprocess.run(argv, env={**env(), **(extra_env or {})}, check=True, capture_output=True)
    return time.perf_counter() - began


def run_plain(model: Path, prompts: list[str], nproc: int, work: Path) -> dict[str, float]:
    out = work / "plain"
    shutil.rmtree(out, ignore_errors=True)
    (work / "prompts.json").write_text(json.dumps(prompts))
    wall = timed([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                  str(REPO / "bench" / "plain_loop.py"), str(model), str(work / "prompts.json"), json.dumps(PARAMS),
                  str(SEED), str(out)])
    spans = [s for f in out.glob("items-rank*.json") for s in json.loads(f.read_text())]
    busy = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    return {"wall_seconds": wall, "items_per_second": len(spans) / busy,
            "item_seconds_median": statistics.median(s["seconds"] for s in spans)}


def run_kubeinfer(model: Path, prompts: list[str], nproc: int, work: Path, output: str,
                  extra_env: dict[str, str] | None = None) -> dict[str, float]:
    manifest = {"apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference",
                "metadata": {"name": "bench"},
                "spec": {"model": {"uri": str(model), "dtype": "float32"},
                         "task": {"type": "text-to-image", "parameters": PARAMS, "seed": SEED},
                         "inputs": {"prompts": prompts}, "output": {"uri": output, "contactSheet": False}}}
    job = work / "job.yaml"
    job.write_text(yaml.safe_dump(manifest))
    wall = timed([sys.executable, "-m", "kubeinfer_runtime.cli", "run", str(job), "--nproc", str(nproc),
                  "--output", output], extra_env)
    return {"wall_seconds": wall}


def steady_state(manifest: str) -> dict[str, float]:
    """Items/s between the first item's start and the last commit, from the manifest's own record."""
    rows = [json.loads(line) for line in manifest.splitlines()]
    busy = max(r["committed_at"] for r in rows) - min(r["committed_at"] - r["seconds"] for r in rows)
    return {"items_per_second": len(rows) / busy, "item_seconds_median": statistics.median(r["seconds"] for r in rows)}


def measure(args: argparse.Namespace, model: Path, work: Path, s3: Any) -> dict[str, Any]:
    prompts = [f"benchmark prompt number {i}" for i in range(args.prompts)]
    rows: dict[str, list[dict[str, float]]] = {"plain": [], "kubeinfer": [], "kubeinfer_s3": []}
    for round_ in range(args.rounds):
        rows["plain"].append(run_plain(model, prompts, args.nproc, work))
        local = work / f"local-{round_}"
        result = run_kubeinfer(model, prompts, args.nproc, work, str(local))
        rows["kubeinfer"].append({**result, **steady_state((local / "manifest.jsonl").read_text())})
        if s3 is not None:
            bucket = f"bench-{round_}-{int(time.time())}"
            s3.create_bucket(bucket)
            result = run_kubeinfer(model, prompts, args.nproc, work, f"s3://{bucket}/run/", s3.env())
            manifest = s3.client().get_object(Bucket=bucket, Key="run/manifest.jsonl")["Body"].read().decode()
            rows["kubeinfer_s3"].append({**result, **steady_state(manifest)})
    return {k: v for k, v in rows.items() if v}


def summarize(rows: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> dict[str, Any]:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPU cores, torch {__import__('torch').__version__}",
        "prompts": args.prompts, "processes": args.nproc, "rounds": args.rounds, "parameters": PARAMS,
        "raw": rows,
        "plain_items_per_second": med("plain", "items_per_second"),
        "kubeinfer_items_per_second": med("kubeinfer", "items_per_second"),
        "throughput_ratio": med("kubeinfer", "items_per_second") / med("plain", "items_per_second"),
        "item_compute_ratio": med("plain", "item_seconds_median") / med("kubeinfer", "item_seconds_median"),
        "wall_ratio": med("plain", "wall_seconds") / med("kubeinfer", "wall_seconds"),
    }
    if "kubeinfer_s3" in rows:
        result["s3_over_local_wall_ratio"] = med("kubeinfer_s3", "wall_seconds") / med("kubeinfer", "wall_seconds")
        result["local_over_s3_items_per_second"] = (med("kubeinfer", "items_per_second")
                                                    / med("kubeinfer_s3", "items_per_second"))
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Runtime overhead ({result['machine']}; {result['prompts']} prompts, {result['processes']} processes, "
             f"{result['rounds']} rounds, tiny Flux {result['parameters']['height']}px "
             f"{result['parameters']['num_inference_steps']} steps)", "",
             "| measure | value | target |", "| --- | --- | --- |",
             f"| plain diffusers loop, items/s | {result['plain_items_per_second']:.2f} | |",
             f"| `kubeinfer run` (data), items/s | {result['kubeinfer_items_per_second']:.2f} | |",
             f"| items/s ratio kubeinfer / plain | {result['throughput_ratio']:.3f} | >= 0.97 |",
             f"| per-item compute time ratio plain / kubeinfer | {result['item_compute_ratio']:.3f} | |",
             f"| whole-run wall ratio plain / kubeinfer (start-up included) | {result['wall_ratio']:.3f} | |"]
    if "s3_over_local_wall_ratio" in result:
        lines.append(f"| items/s ratio local output / S3 (MinIO) output | "
                     f"{result['local_over_s3_items_per_second']:.3f} | |")
        lines.append(f"| whole-run wall ratio S3 output / local output | {result['s3_over_local_wall_ratio']:.3f} "
                     "| <= 1.03 |")
    return "\n".join(lines) + "\n"


def start_s3(work: Path) -> Any:
    sys.path.insert(0, str(REPO / "tests"))
    from localcluster.binaries import MissingBinaryError
    from localcluster.s3 import S3Server

    try:
        return S3Server(work / "minio").start()
    except MissingBinaryError as err:
        print(f"no S3 server ({err}); skipping the upload-overlap figure", file=sys.stderr)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "runtime"))
    from kubeinfer_runtime import tinymodels

    model = tinymodels.cached("flux")
    with tempfile.TemporaryDirectory(prefix="kubeinfer-bench-") as tmp:
        s3 = start_s3(Path(tmp))
        try:
            result = summarize(measure(args, model, Path(tmp), s3), args)
        finally:
            if s3 is not None:
                s3.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime.json").write_text(json.dumps(result, indent=2))
    (args.out / "runtime.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
