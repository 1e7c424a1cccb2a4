"""Resume: kill a worker process mid-run, lose a commit record, run again: every item exactly once, same bytes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from rank_processes import global_rank, rank_processes
from run_harness import kubeinfer, manifest, reference_pngs, write

from kubeinfer_runtime.ledger import Ledger
from kubeinfer_runtime.outputs import RECORD_ITEMS_ENV
from kubeinfer_runtime.rank import HOLD_ENV
from kubeinfer_runtime.storage import ObjectStore

pytest_plugins = ["s3_fixtures"]

pytestmark = [pytest.mark.runtime, pytest.mark.s3]
PROMPTS = [f"resume prompt {i}" for i in range(12)]
PARAMS = {"num_inference_steps": 8, "height": 32, "width": 32, "max_sequence_length": 16}
SEED = 11


def kill_a_rank_after(root: Any, ledger: Ledger, committed: int, rank: int, timeout_s: float = 300) -> int:
    """SIGKILL `rank` once it has `committed` items in the ledger; returns how many the ledger had then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and root.poll() is None:
        entries = ledger.entries()
        done = len(entries)
        if sum(1 for e in entries if e.rank == rank) >= committed:
            victim = next(p for p in rank_processes(root.pid) if global_rank(p) == rank)
            victim.send_signal(signal.SIGKILL)
            return done
        time.sleep(0.2)
    raise AssertionError(f"the run ended or stalled before {committed} items were committed:\n"
                         f"{root.stdout.read() if root.poll() is not None else ''}")


@pytest.mark.parametrize("batch", [1, 4])
def test_killed_worker_resumes_with_every_item_exactly_once(flux_dir: Path, tmp_path: Path, s3_server: Any,
                                                            s3_bucket: str, batch: int) -> None:
    """batchSize 4: a batch left half committed (a lost record) is computed whole again, so every image
    equals diffusers called on the same four prompts; its committed items keep their first commit."""
    uri = f"s3://{s3_bucket}/resume-{batch}/"
    body = manifest("resume", str(flux_dir), {"prompts": PROMPTS}, PARAMS, seed=SEED,
                    strategy={"type": "data", "batchSize": batch})
    job = write(tmp_path / "job.yaml", body)
    store = ObjectStore(uri)
    ledger = Ledger(store)
    per_item = {RECORD_ITEMS_ENV: "1"}  # a record per item: the kill lands between records, even in a batch
    # Rank 0 has the first 6 items (or batches 0 and 1 of 3); it stops after its first 2 results (with
    # batchSize 4, half of its first batch) until it is killed, so the kill lands mid-run however fast or loaded
    # the machine is.
    first = kubeinfer("run", str(job), "--nproc", "2", "--output", uri, background=True,
                      env={**per_item, HOLD_ENV: "0:2"})
    killed_at = kill_a_rank_after(first, ledger, committed=2, rank=0)
    log = first.communicate(timeout=300)[0]
    assert first.returncode != 0, "torchrun must fail when one of its processes is killed"
    assert killed_at < len(PROMPTS) and not store.exists("_SUCCESS"), log[-3000:]
    # A crash between objects and their commit record: the objects stay, the record is lost.
    s3 = s3_server.client()
    records = s3.list_objects_v2(Bucket=s3_bucket, Prefix=f"resume-{batch}/_ledger/commits/")["Contents"]
    first_record = min(records, key=lambda o: o["Key"])
    lost = {json.loads(line)["id"] for line in store.get(first_record["Key"].split("/", 1)[1]).splitlines()}
    kept = {e.id: e for e in ledger.entries() if e.id not in lost}
    assert len(lost) == 1 and (batch == 1 or any(int(i) // batch == int(next(iter(lost))) // batch for i in kept)), \
        "the lost record must leave its batch half committed"
    s3.delete_object(Bucket=s3_bucket, Key=first_record["Key"])
    committed_before = len(ledger.committed())

    second = kubeinfer("run", str(job), "--nproc", "2", "--output", uri, env=per_item)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"12 items, {committed_before} already committed, {12 - committed_before} to do" in second.stderr
    entries = [json.loads(line) for line in store.get("manifest.jsonl").decode().splitlines()]
    assert [e["index"] for e in entries] == list(range(12)), "every item exactly once, in order"
    assert {e["id"]: e["attempt"] for e in entries if e["id"] in kept} == {i: e.attempt for i, e in kept.items()}
    assert {e["id"]: e["committed_at"] for e in entries if e["id"] in kept} == {
        i: e.committed_at for i, e in kept.items()}, "items committed before the kill were committed again"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix=f"resume-{batch}/items/")["Contents"]]
    assert sorted(keys) == [f"resume-{batch}/items/{i:05d}.png" for i in range(12)], "no duplicate or stray objects"
    reference = reference_pngs(flux_dir, PROMPTS, SEED, PARAMS, batch=batch)
    got = [store.get(e["key"]) for e in entries]
    assert [i for i in range(12) if got[i] != reference[i]] == [], "items differ from diffusers called directly"
