"""Jobs for the e2e tests: examples with a per-test output prefix, a slow-enough fault job, output checks.

"Nothing lost, nothing duplicated" is checked from the job's own record: `manifest.jsonl` lists every
item exactly once, each listed object exists with the recorded sha256, no item object exists
outside it, `_SUCCESS` is present, and every item's bytes equal a single-process reference run
(`kubeinfer run --nproc 1`) of the same spec.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.support import shared
from e2e.support.cluster import REPO, Cluster, Manifest, job_manifest
from kubeinfer_api.validation import parse_manifest
from kubeinfer_operator.builders.env import threads_env
from kubeinfer_operator.builders.statefulset import resources
from kubeinfer_runtime.outputs import RECORD_SECONDS_ENV

#: kubeinfer_runtime.rank.ITEM_DELAY_ENV (not imported: that module loads torch)
ITEM_DELAY_ENV = "KUBEINFER_TEST_ONLY_ITEM_DELAY_SECONDS"

EXAMPLES = REPO / "examples"
OUTPUT_BUCKET = "outputs"
#: Objects a run writes besides its items (bookkeeping); everything else must be in the manifest.
BOOKKEEPING = ("manifest.jsonl", "_SUCCESS", "contact-sheet.png")


def load_example(name: str) -> Manifest:
    manifest: Manifest = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return manifest


def output_prefix(namespace: str, job: str) -> str:
    """Each test writes under its own prefix, so no run ever sees (and skips) another run's items."""
    return f"{namespace}/{job}/"


def for_test(manifest: Manifest, namespace: str) -> Manifest:
    """A copy of `manifest` writing to this test's output prefix."""
    job = copy.deepcopy(manifest)
    job["spec"]["output"]["uri"] = f"s3://{OUTPUT_BUCKET}/{output_prefix(namespace, job['metadata']['name'])}"
    return job


def fault_job(name: str, namespace: str, prompts: int = 24, steps: int = 2, nodes: int = 2,
              item_delay: float = 2.0) -> Manifest:
    """The data example made slow enough to inject a fault mid-job: each item takes `item_delay` seconds
    (the workers' test-only knob), so the job is slow without keeping the CPUs busy, and the single-process
    reference (run without the knob) takes seconds."""
    job = load_example("data-text-to-image")
    job["metadata"]["name"] = name
    spec = job["spec"]
    spec["inputs"]["prompts"] = [f"fault test prompt {i}" for i in range(prompts)]
    spec["task"]["parameters"] = {**spec["task"]["parameters"], "num_inference_steps": steps}
    spec["workers"]["nodes"] = nodes
    if item_delay:  # and each item is in the ledger (so in the job's progress) within a second, not five
        spec["workers"]["env"] = [*spec["workers"].get("env", []), {"name": ITEM_DELAY_ENV, "value": str(item_delay)},
                                  {"name": RECORD_SECONDS_ENV, "value": "1"}]
    spec["failurePolicy"] = {"maxRestarts": 3, "stallTimeoutSeconds": 300}
    spec.pop("ttlSecondsAfterFinished", None)
    return for_test(job, namespace)


def launch(cluster: Cluster, namespace: str, manifest: Manifest) -> str:
    """`kubectl apply` the job; returns its name."""
    cluster.apply(manifest, namespace)
    return str(manifest["metadata"]["name"])


def succeeded(job: Manifest) -> int:
    return int(((job.get("status") or {}).get("progress") or {}).get("succeeded") or 0)


@dataclass
class RunOutputs:
    """What one run wrote: manifest entries by item id, and the item bytes by item id."""

    entries: dict[str, Manifest]
    items: dict[str, bytes]
    objects: dict[str, bytes]


def _entry_key(entry: Manifest, prefix: str) -> str:
    key = str(entry["key"])
    return key.split(prefix, 1)[1] if prefix and prefix in key else key


def parse_run(objects: dict[str, bytes], prefix: str = "") -> RunOutputs:
    """Check the run's own bookkeeping and index its items by id (fails on a duplicate or a gap)."""
    assert "_SUCCESS" in objects, f"no _SUCCESS; objects: {sorted(objects)[:20]}"
    assert "manifest.jsonl" in objects, "no manifest.jsonl"
    lines = [json.loads(line) for line in objects["manifest.jsonl"].decode().splitlines() if line.strip()]
    ids = [str(entry["id"]) for entry in lines]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"items listed more than once in manifest.jsonl: {duplicates}"
    entries = {str(entry["id"]): entry for entry in lines}
    items: dict[str, bytes] = {}
    for item_id, entry in entries.items():
        key = _entry_key(entry, prefix)
        assert key in objects, f"item {item_id}: manifest names {key!r}, which does not exist"
        data = objects[key]
        if "sha256" in entry:
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"item {item_id}: sha256 differs"
        items[item_id] = data
    listed = {_entry_key(e, prefix) for e in entries.values()}
    strays = sorted(k for k in objects if k not in listed and k not in BOOKKEEPING and not k.startswith("_"))
    assert not strays, f"objects outside the manifest (duplicates or leftovers): {strays}"
    return RunOutputs(entries, items, objects)


def job_outputs(cluster: Cluster, namespace: str, job: str) -> RunOutputs:
    return parse_run(cluster.s3_objects(OUTPUT_BUCKET, output_prefix(namespace, job)),
                     output_prefix(namespace, job))  # fmt: skip


def reference_run(manifest: Manifest, workdir: Path, s3_env: dict[str, str], threads: str) -> RunOutputs:
    """The same spec in one local process (`kubeinfer run --nproc 1`) computing with `threads` CPU threads
    (the pods' `pod_threads`: sums may depend on it), read from its output folder."""
    workdir.mkdir(parents=True, exist_ok=True)
    job_file = workdir / "job.yaml"
    job_file.write_text(yaml.safe_dump(job_manifest(manifest["metadata"]["name"], manifest["spec"])))
    out = workdir / "out"
    kubeinfer = Path(sys.executable).with_name("kubeinfer")
    env = {**os.environ, **s3_env, "OMP_NUM_THREADS": threads}
    result = subprocess.run([str(kubeinfer), "run", str(job_file), "--nproc", "1", "--output", str(out)],
                            env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, f"reference run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return _read_run(out)


def pod_threads(manifest: Manifest) -> str:
    """The OMP_NUM_THREADS each process of the job's pods gets."""
    spec = parse_manifest(manifest)[1]
    return str(threads_env(spec, resources(spec))[0]["value"])


def shared_reference_run(manifest: Manifest, folder: Path, s3_env: dict[str, str], threads: str) -> RunOutputs:
    """`reference_run`, made once per pytest run for every xdist worker (the e2e session folder is shared):
    specs with the same `reference_key` produce the same items."""
    workdir = folder / f"{reference_key(manifest)}-{threads}"
    with shared.exclusive(workdir.with_suffix(".lock")):
        if (workdir / "done").exists():
            return _read_run(workdir / "out")
        shutil.rmtree(workdir, ignore_errors=True)  # a run cut short before it was done
        run = reference_run(manifest, workdir, s3_env, threads)
        (workdir / "done").touch()
        return run


def _read_run(out: Path) -> RunOutputs:
    return parse_run({p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()})


def assert_same_items(run: RunOutputs, reference: RunOutputs, expected: int, pixel_tolerance: int = 0) -> None:
    """Every item exactly once and equal to the single-process reference (bytes, or pixels within tolerance)."""
    assert len(run.items) == expected, f"{len(run.items)} items committed, expected {expected}"
    assert set(run.items) == set(reference.items), "item ids differ from the reference run"
    differing = sorted(i for i in run.items if not _same(run.items[i], reference.items[i], pixel_tolerance))
    assert not differing, f"items that differ from the single-process reference: {differing}"


def _same(a: bytes, b: bytes, pixel_tolerance: int) -> bool:
    if a == b:
        return True
    if not pixel_tolerance:
        return False
    import io

    import numpy as np
    from PIL import Image

    try:
        left, right = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB"), dtype=np.int16) for x in (a, b))
    except OSError:  # not images: only equal bytes are equal
        return False
    return left.shape == right.shape and int(np.abs(left - right).max()) <= pixel_tolerance


def item_count(manifest: Manifest) -> int:
    prompts = manifest["spec"]["inputs"].get("prompts")
    assert prompts is not None, "e2e jobs use inline prompts"
    return len(prompts)


def reference_key(manifest: Manifest) -> str:
    """Two specs that differ only in output/workers/failure handling produce the same items."""
    spec = {k: v for k, v in manifest["spec"].items() if k in ("model", "task", "inputs")}
    strategy = {k: v for k, v in manifest["spec"].get("strategy", {}).items() if k == "batchSize"}
    return hashlib.sha256(json.dumps([spec, strategy], sort_keys=True).encode()).hexdigest()[:16]


def with_status(job: Manifest) -> dict[str, Any]:
    return dict(job.get("status") or {})
