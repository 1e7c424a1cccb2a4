"""Elastic data parallel with real processes: workers that claim chunks through the output store.

Three `kubeinfer-worker` launchers stand in for three pods (each its own torchrun, as the operator runs
an elastic job); one is killed mid-job, one is slow. Outputs are compared with transformers' own
`generate()` on the same global batches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from rank_processes import rank_processes
from strategy_harness import PROMPTS, REPO, job_json
from test_strategy_data import reference_batched_texts

from kubeinfer_runtime.claims import LEASE_ENV
from kubeinfer_runtime.elastic import CHUNK_ENV, SLOW_ENV
from kubeinfer_runtime.storage import ObjectStore

pytest_plugins = ["s3_fixtures"]
pytestmark = pytest.mark.runtime

PARAMS = {"max_new_tokens": 6}
SEED = 5
BATCH = 4


def spec(model: Path, out: Path, count: int, nodes: int) -> dict[str, Any]:
    return {"model": {"uri": str(model), "dtype": "float32"}, "task": {"type": "text-generation", "parameters": PARAMS,
                                                               "seed": SEED},
            "strategy": {"type": "data", "elastic": True, "batchSize": BATCH}, "workers": {"nodes": nodes},
            "inputs": {"prompts": [PROMPTS[i % len(PROMPTS)] for i in range(count)]}, "output": {"uri": str(out)}}


def pod_env(job: Path, node_rank: int, tmp: Path, nodes: int = 3, **extra: str) -> dict[str, str]:
    """What the operator gives a pod of an elastic job (the PET_* rendezvous env is set but unused)."""
    return {**os.environ, "KUBEINFER_JOB_FILE": str(job), "KUBEINFER_ATTEMPT": "1", "PET_NNODES": str(nodes),
            "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(node_rank), "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": "1", "KUBEINFER_WORKER_METRICS_PORT": "0", "KUBEINFER_PROGRESS": "off",
            "KUBEINFER_TERMINATION_LOG": str(tmp / f"term-{node_rank}"), "HF_HUB_OFFLINE": "1",
            LEASE_ENV: "3", CHUNK_ENV: str(BATCH),
            "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("api", "runtime")), **extra}


def start_pod(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kubeinfer_runtime.worker"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class RankWatch:
    """Every rank process each pod ever ran (a restarted or re-launched rank would add a pid)."""

    def __init__(self, pods: list[subprocess.Popen[str]]) -> None:
        self.pods, self.pids = pods, [set[int]() for _ in pods]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def watch(self, pods: list[subprocess.Popen[str]]) -> None:
        """Watch `pods` from now on (a pod already watched keeps the pids seen so far)."""
        with self.lock:
            known = dict(zip((p.pid for p in self.pods), self.pids, strict=True))
            self.pods, self.pids = pods, [known.get(p.pid, set[int]()) for p in pods]

    def _watch(self) -> None:
        while not self.stop.wait(0.05):
            with self.lock:
                for pod, seen in zip(self.pods, self.pids, strict=True):
                    seen.update(p.pid for p in rank_processes(pod.pid))

    def rank_of(self, index: int) -> psutil.Process:
        deadline = time.monotonic() + 120
        while not self.pids[index] and time.monotonic() < deadline:
            time.sleep(0.05)
        return psutil.Process(next(iter(self.pids[index])))


def items_of(count: int) -> list[dict[str, Any]]:
    return [{"index": i, "prompt": PROMPTS[i % len(PROMPTS)], "seed": SEED + i} for i in range(count)]


def manifest_texts(out: Path) -> tuple[list[dict[str, Any]], dict[int, str]]:
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    texts = {e["index"]: json.loads((out / e["key"]).read_text())["text"] for e in entries}
    return entries, texts


def committed_by(out: Path, slot: int) -> int:
    folder = out / "_ledger" / "commits"
    rows = [json.loads(line) for f in folder.glob("*.jsonl") for line in f.read_text().splitlines()]
    return sum(1 for r in rows if r.get("rank") == slot and "error" not in r)


def test_a_killed_worker_loses_only_its_chunk(gpt2_dir: Path, tmp_path: Path) -> None:
    """Pod 1's rank is SIGKILLed while it holds a computed, unpublished chunk: pods 0 and 2 keep their
    processes and the model, take the chunk over when its lease runs out, and the job completes with every
    item once, each text equal to transformers on the same window of 4 (batchSize 4)."""
    count, out = 48, tmp_path / "out"
    job = job_json(spec(gpt2_dir, out, count, nodes=3), tmp_path / "job.json", uid="uid-kill")
    # Pod 1 starts first and holds each chunk it computed for 2 s before publishing it, so it has committed
    # work and holds a computed chunk when it is killed, however fast or loaded the machine is.
    pods = [start_pod(pod_env(job, 1, tmp_path, **{SLOW_ENV: "1:2"}))]
    watch = RankWatch(pods)
    try:
        victim = watch.rank_of(0)
        deadline = time.monotonic() + 300
        while committed_by(out, 1) == 0:
            assert time.monotonic() < deadline and pods[0].poll() is None, "pod 1 committed nothing"
            time.sleep(0.05)
        pods = [start_pod(pod_env(job, 0, tmp_path)), pods[0], start_pod(pod_env(job, 2, tmp_path))]
        watch.watch(pods)
        for survivor in (0, 2):  # up and claiming when pod 1 dies
            watch.rank_of(survivor)
        kept = committed_by(out, 1)  # pod 1's items committed before the kill (it may commit more until then)
        victim.send_signal(signal.SIGKILL)
        logs = [pod.communicate(timeout=400)[0] for pod in pods]
    finally:
        watch.stop.set()
        for pod in pods:
            pod.kill()
    assert pods[1].returncode != 0, "the killed pod's launcher reports the failure (a kubelet restarts it)"
    assert [pods[0].returncode, pods[2].returncode] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert [len(watch.pids[0]), len(watch.pids[2])] == [1, 1], "the survivors' rank processes never restarted"
    entries, texts = manifest_texts(out)
    assert [e["index"] for e in entries] == list(range(count)), "every item exactly once, in order"
    items = items_of(count)
    assert texts == reference_batched_texts(gpt2_dir, [items[i:i + BATCH] for i in range(0, count, BATCH)], PARAMS)
    taken_over = "its owner (slot 1) is gone; taking it over" in logs[0] + logs[2]
    speculated = "slot 1 is still on it; computing a speculative copy" in logs[0] + logs[2]
    assert taken_over or speculated, "the victim's chunk in hand was computed by a survivor"
    ranks = [e["rank"] for e in entries]
    assert ranks.count(1) >= kept > 0, "pod 1's committed items stay committed: only its chunk in hand is lost"
    assert set(ranks) - {1} <= {0, 2} and set(ranks) - {1}, "the survivors computed the rest"


def claimed_by(out: Path, slot: int) -> bool:
    """Whether worker `slot` holds a chunk claim (local files: _ledger/elastic/<epoch>/claims/c<chunk>/<gen>)."""
    claims = (out / "_ledger" / "elastic").glob("*/claims/c*/*")
    return any(json.loads(path.read_text() or "{}").get("slot") == slot for path in claims)


def test_a_slow_worker_s_chunk_is_finished_by_another(gpt2_dir: Path, tmp_path: Path) -> None:
    """Two pods; pod 1 starts first and holds each chunk it computes instead of publishing it: pod 0, once
    out of unclaimed chunks, computes a speculative copy of pod 1's chunk in hand and commits it first;
    pod 1's copy is dropped unwritten, and every item is listed once, equal to transformers on the same
    windows."""
    count, out = 16, tmp_path / "out"
    job = job_json(spec(gpt2_dir, out, count, nodes=2), tmp_path / "job.json", uid="uid-slow")
    slow = start_pod(pod_env(job, 1, tmp_path, nodes=2, **{SLOW_ENV: "1:300"}))
    pods = [slow]
    try:
        deadline = time.monotonic() + 300
        while not claimed_by(out, 1):  # pod 0 starts once pod 1 holds work, however slow this machine is
            assert time.monotonic() < deadline and slow.poll() is None, "pod 1 claimed nothing"
            time.sleep(0.05)
        pods.insert(0, start_pod(pod_env(job, 0, tmp_path, nodes=2)))
        logs = [pod.communicate(timeout=400)[0] for pod in pods]
    finally:
        for pod in pods:
            pod.kill()
    assert [pod.returncode for pod in pods] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "slot 1 is still on it; computing a speculative copy" in logs[0], logs[0][-4000:]
    assert "another worker commits it; discarding this copy" in logs[1], logs[1][-4000:]
    entries, texts = manifest_texts(out)
    assert [e["index"] for e in entries] == list(range(count)), "every item exactly once, in order"
    assert {e["rank"] for e in entries} == {0}, "pod 1's copies were never published"
    items = items_of(count)
    assert texts == reference_batched_texts(gpt2_dir, [items[i:i + BATCH] for i in range(0, count, BATCH)], PARAMS)


@pytest.mark.s3
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_create_only_write_has_exactly_one_winner(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """16 threads create the same keys at once: one winner per key, and the key holds the winner's bytes."""
    bucket = request.getfixturevalue("s3_bucket") if where == "s3" else ""
    store = ObjectStore(f"s3://{bucket}/claims/" if bucket else str(tmp_path / "claims"))

    def race(key: str) -> list[tuple[bool, bytes]]:
        with ThreadPoolExecutor(max_workers=16) as pool:
            bodies = [f"writer {n}".encode() for n in range(16)]
            return list(zip(pool.map(lambda body: store.put_new(key, body), bodies), bodies, strict=True))

    for key in ("a", "b/c", "d"):
        outcomes = race(key)
        winners = [body for won, body in outcomes if won]
        assert len(winners) == 1, outcomes
        assert store.get(key) == winners[0]
