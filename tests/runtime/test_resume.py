"""Resume: kill a worker process mid-run, lose a ledger entry, run again: every item exactly once, same bytes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from run_harness import kubeinfer, manifest, reference_pngs, write

from kubeinfer_runtime.ledger import Ledger
from kubeinfer_runtime.storage import ObjectStore

pytest_plugins = ["s3_fixtures"]

pytestmark = [pytest.mark.runtime, pytest.mark.s3]
PROMPTS = [f"resume prompt {i}" for i in range(12)]
PARAMS = {"num_inference_steps": 8, "height": 32, "width": 32, "max_sequence_length": 16}
SEED = 11


def rank_processes(root: Any) -> list[psutil.Process]:
    return [p for p in psutil.Process(root.pid).children(recursive=True)
            if "kubeinfer_runtime.rank" in " ".join(p.cmdline())]


def kill_a_rank_after(root: Any, ledger: Ledger, committed: int, timeout_s: float = 300) -> int:
    """SIGKILL one rank once `committed` items are in the ledger; returns how many there were."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and root.poll() is None:
        done = len(ledger.committed())
        if done >= committed:
            victim = rank_processes(root)[-1]
            victim.send_signal(signal.SIGKILL)
            return done
        time.sleep(0.2)
    raise AssertionError(f"the run ended or stalled before {committed} items were committed:\n"
                         f"{root.stdout.read() if root.poll() is not None else ''}")


def test_killed_worker_resumes_with_every_item_exactly_once(flux_dir: Path, tmp_path: Path, s3_server: Any,
                                                            s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/resume/"
    job = write(tmp_path / "job.yaml", manifest("resume", str(flux_dir), {"prompts": PROMPTS}, PARAMS, seed=SEED))
    store = ObjectStore(uri)
    ledger = Ledger(store)
    first = kubeinfer("run", str(job), "--nproc", "2", "--output", uri, background=True)
    killed_at = kill_a_rank_after(first, ledger, committed=2)
    log = first.communicate(timeout=300)[0]
    assert first.returncode != 0, "torchrun must fail when one of its processes is killed"
    assert killed_at < len(PROMPTS) and not store.exists("_SUCCESS"), log[-3000:]
    # A crash between an object and its ledger entry: the object stays, the entry is lost.
    lost = sorted(ledger.committed())[0]
    s3 = s3_server.client()
    s3.delete_object(Bucket=s3_bucket, Key=f"resume/_ledger/items/{lost}.json")
    committed_before = len(ledger.committed())

    second = kubeinfer("run", str(job), "--nproc", "2", "--output", uri)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"12 items, {committed_before} already committed, {12 - committed_before} to do" in second.stderr
    entries = [json.loads(line) for line in store.get("manifest.jsonl").decode().splitlines()]
    assert [e["index"] for e in entries] == list(range(12)), "every item exactly once, in order"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="resume/items/")["Contents"]]
    assert sorted(keys) == [f"resume/items/{i:05d}.png" for i in range(12)], "no duplicate or stray objects"
    reference = reference_pngs(flux_dir, PROMPTS, SEED, PARAMS)
    got = [store.get(e["key"]) for e in entries]
    assert [i for i in range(12) if got[i] != reference[i]] == [], "items differ from an uninterrupted run"
