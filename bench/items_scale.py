"""Items at scale: what the framework costs per item, at 10^4 and 10^6 items, on local files and on MinIO.

Each run is `kubeinfer run` of a text-generation job with 2 processes (real torchrun, gloo) whose
model is the test-only echo stand-in (`KUBEINFER_TEST_ONLY_ECHO_MODEL=1`: the output is the prompt,
in microseconds), so the figures are the framework's alone: reading the inputs, planning, encoding,
one output object per item, commit records, progress counts and the manifest. Per run it reports:

* items/s per process (items committed over the compute loop's time, per rank, averaged);
* storage requests per item besides the item's own output PUT (counted in each process, retries
  included; an S3 LIST page of 1000 keys counts once);
* peak RSS of the largest rank;
* resume planning with half the items done (every other commit record deleted): `plan_work`, timed
  in this process (read inputs, fingerprint, read the records);
* finalize: read every record and stream `manifest.jsonl`, timed in this process.

MinIO on this machine takes about 250 small PUTs/s, so its runs default to 20,000 items: the
per-item ratios do not depend on the count (`--s3-items 1000000` for the full size, about an hour).
Prints a table and writes bench/results/items_scale.{json,md}.

    python bench/items_scale.py [--items 10000 1000000] [--s3-items 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
for folder in ("api", "runtime", "tests"):
    sys.path.insert(0, str(REPO / folder))
BUCKET = "bench-items"
RANK_LINE = re.compile(r"rank (\d+): (\d+) items committed, (\d+) failed in ([\d.]+) s")


def write_inputs(path: Path, count: int) -> None:
    with path.open("w") as out:
        for i in range(count):
            out.write(f'{{"id": "item-{i:07d}", "prompt": "prompt number {i}"}}\n')


def job_manifest(inputs: Path, output: str) -> dict[str, Any]:
    return {"apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference", "metadata": {"name": "items"},
            "spec": {"model": {"uri": "/echo-stand-in-needs-no-model"}, "task": {"type": "text-generation"},
                     "inputs": {"uri": str(inputs)}, "output": {"uri": output}}}


def run_job(job: Path, output: str, stats: Path, env: dict[str, str]) -> tuple[float, list[float], str]:
    """`kubeinfer run` with 2 processes; (wall seconds, items/s of each rank, log)."""
    full_env = {**os.environ, **env, "KUBEINFER_TEST_ONLY_ECHO_MODEL": "1",
                "KUBEINFER_TEST_ONLY_STATS_DIR": str(stats), "PYTHONPATH": f"{REPO / 'api'}:{REPO / 'runtime'}"}
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kubeinfer_runtime.cli", "run", str(job), "--nproc", "2",
                           "--output", output], env=full_env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"the job failed ({proc.returncode}):\n{log[-4000:]}")
    rates = [int(m[1]) / float(m[3]) for m in RANK_LINE.findall(log) if float(m[3]) > 0]
    return wall, rates, log


def rank_stats(stats: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(stats.glob("rank-*.json"))]


def finalize_and_resume(job: dict[str, Any], output: str, endpoint: str | None,
                        count: int) -> tuple[float, float, int]:
    """(finalize seconds, resume-planning seconds with half done, items the plan left to do)."""
    from kubeinfer_api.jobconfig import make_job_config
    from kubeinfer_api.validation import parse_manifest
    from kubeinfer_runtime.ledger import COMMITS, Ledger
    from kubeinfer_runtime.rank import plan_work
    from kubeinfer_runtime.storage import ObjectStore

    store = ObjectStore(output, endpoint_url=endpoint)
    ledger = Ledger(store)
    began = time.perf_counter()
    ledger.write_manifest(count)
    finalize = time.perf_counter() - began
    for name in sorted(store.list(COMMITS))[::2]:
        store.fs.rm(store.path(f"{COMMITS}/{name}"))
    config = make_job_config(*parse_manifest(job))
    began = time.perf_counter()
    work = plan_work(config, ledger)
    return finalize, time.perf_counter() - began, work.to_do


def one_run(backend: str, count: int, work: Path, server: Any) -> dict[str, Any]:
    folder = work / f"{backend}-{count}"
    folder.mkdir()
    inputs, stats = folder / "inputs.jsonl", folder / "stats"
    stats.mkdir()
    write_inputs(inputs, count)
    env: dict[str, str] = {}
    endpoint = None
    if backend == "s3":
        output = f"s3://{BUCKET}/items-{count}"
        env = server.env()
        endpoint = env.get("AWS_ENDPOINT_URL")
    else:
        output = str(folder / "out")
    manifest = job_manifest(inputs, output)
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump(manifest))
    wall, rates, _ = run_job(job, output, stats, env)
    ranks = rank_stats(stats)
    ledger_requests = sum(n for r in ranks for k, n in r["requests"].items() if k.endswith(" ledger"))
    item_writes = sum(n for r in ranks for k, n in r["requests"].items() if k == "write items")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        finalize, resume, to_do = finalize_and_resume(manifest, output, endpoint, count)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    shutil.rmtree(folder / "out", ignore_errors=True)
    return {"backend": backend, "items": count, "wall_s": round(wall, 1),
            "items_per_s_per_process": round(sum(rates) / len(rates), 1) if rates else None,
            "item_writes": item_writes, "other_requests_per_item": round(ledger_requests / count, 5),
            "peak_rss_mib": round(max(r["max_rss_bytes"] for r in ranks) / 2**20, 1),
            "finalize_s": round(finalize, 2), "resume_plan_s": round(resume, 2), "resume_to_do": to_do}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Items at scale ({report['machine']}; 2 processes, echo stand-in model; `{report['command']}`)", "",
             "| storage | items | items/s per process | other requests per item | peak RSS of a rank (MiB) | "
             "resume planning, half done (s) | finalize (s) | wall (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["runs"]:
        lines.append(f"| {r['backend']} | {r['items']:,} | {r['items_per_s_per_process']:,} | "
                     f"{r['other_requests_per_item']} | {r['peak_rss_mib']} | {r['resume_plan_s']} | "
                     f"{r['finalize_s']} | {r['wall_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 1_000_000], help="local-file runs")
    parser.add_argument("--s3-items", type=int, nargs="*", default=[20_000], help="MinIO runs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    from localcluster.s3 import S3Server

    work = Path(tempfile.mkdtemp(prefix="items-scale-", dir=os.environ.get("KUBEINFER_BENCH_DIR")))
    server = None
    try:
        runs = [one_run("local", n, work, None) for n in args.items]
        if args.s3_items:
            server = S3Server(work / "minio").start()
            server.client().create_bucket(Bucket=BUCKET)
            runs += [one_run("s3", n, work, server) for n in args.s3_items]
        report = {"machine": f"{os.cpu_count()} CPUs", "runs": runs,
                  "command": "make bench-items (python bench/items_scale.py "
                             f"--items {' '.join(map(str, args.items))} "
                             f"--s3-items {' '.join(map(str, args.s3_items))})"}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "items_scale.json").write_text(json.dumps(report, indent=1))
        (args.out / "items_scale.md").write_text(markdown(report))
        print(markdown(report))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
