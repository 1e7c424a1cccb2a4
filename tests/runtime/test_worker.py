"""`kubeinfer-worker` as two pods would run it (PET_* env, two launchers on one host), then a restart."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from run_harness import PARAMS
from strategy_harness import REPO, free_port, job_json

from kubeinfer_runtime.rank import HOLD_ENV

pytestmark = pytest.mark.runtime


def worker_env(job_file: Path, node_rank: int, port: int, tmp: Path, metrics_port: int = 0) -> dict[str, str]:
    return {**os.environ, "KUBEINFER_JOB_FILE": str(job_file), "KUBEINFER_ATTEMPT": "1",
            "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(node_rank),
            "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port),
            "KUBEINFER_WORKER_METRICS_PORT": str(metrics_port), "KUBEINFER_PROGRESS": "off",
            "KUBEINFER_TERMINATION_LOG": str(tmp / f"term-{node_rank}"), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("api", "runtime"))}


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kubeinfer_runtime.worker"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_two_node_job_then_restart_is_a_no_op(flux_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = {"model": {"uri": str(flux_dir), "dtype": "float32"},
            "task": {"type": "text-to-image", "parameters": PARAMS, "seed": 5},
            "inputs": {"prompts": ["one", "two", "three"]}, "workers": {"nodes": 2},
            "output": {"uri": str(out)}}
    job = job_json(spec, tmp_path / "job.json")
    port, metrics_port = free_port(), free_port()
    # Node 1 starts first: it must wait for the master's port instead of failing.
    node1 = start(worker_env(job, 1, port, tmp_path))
    node0 = start(worker_env(job, 0, port, tmp_path, metrics_port))
    logs = [p.communicate(timeout=400)[0] for p in (node0, node1)]
    assert [node0.returncode, node1.returncode] == [0, 0], "\n".join(log[-3000:] for log in logs)
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [e["index"] for e in entries] == [0, 1, 2]
    assert {e["rank"] for e in entries} == {0, 1} and {e["attempt"] for e in entries} == {1}
    assert "complete [####################] 3/3 items" in logs[0]

    again = start(worker_env(job, 1, free_port(), tmp_path))
    log = again.communicate(timeout=120)[0]
    assert again.returncode == 0, log
    assert "already complete (3 of 3 items); nothing to do" in log


def test_an_output_path_the_pods_do_not_share_fails_clearly(flux_dir: Path, tmp_path: Path) -> None:
    """Node 1 sees its own empty folder at the output path (a private tmpfs), as a pod with a local volume would."""
    out = tmp_path / "out"
    out.mkdir()
    spec = {"model": {"uri": str(flux_dir), "dtype": "float32"}, "task": {"parameters": PARAMS},
            "inputs": {"prompts": ["one", "two"]}, "workers": {"nodes": 2}, "output": {"uri": str(out)}}
    job, port = job_json(spec, tmp_path / "job.json"), free_port()
    private = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'mount -t tmpfs none "{out}" && exec "$0" -m kubeinfer_runtime.worker', sys.executable]
    node1 = subprocess.Popen(private, env=worker_env(job, 1, port, tmp_path), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    node0 = start(worker_env(job, 0, port, tmp_path))
    logs = [p.communicate(timeout=400)[0] for p in (node0, node1)]
    assert node0.returncode != 0 and node1.returncode != 0, "\n".join(logs)
    for node in (0, 1):
        assert "is not shared by the workers" in (tmp_path / f"term-{node}").read_text()
    assert not (out / "manifest.jsonl").exists()


def test_too_many_failed_items_is_an_outcome_for_this_job_only(flux_dir: Path, tmp_path: Path) -> None:
    """_FAILED ends this job (a restarted worker idles); a re-created job (new uid) retries the failed items."""
    out, prompts = tmp_path / "out", tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "ok", "prompt": "a"}\n{"id": "bad", "prompt": "b", "no_such_argument": 1}\n')
    spec = {"model": {"uri": str(flux_dir), "dtype": "float32"},
            "task": {"type": "text-to-image", "parameters": PARAMS}, "inputs": {"uri": str(prompts)},
            "output": {"uri": str(out)}}
    env = {**worker_env(job_json(spec, tmp_path / "job.json", uid="uid-1"), 0, free_port(), tmp_path),
           "PET_NNODES": "1"}
    first = start(env)
    log = first.communicate(timeout=400)[0]
    assert first.returncode != 0, log
    assert "1 of 2 items failed, 1 succeeded" in (tmp_path / "term-0").read_text()
    assert not (out / "_SUCCESS").exists()
    outcome = json.loads((out / "_FAILED").read_text())
    assert (outcome["uid"], outcome["failed"], outcome["succeeded"]) == ("uid-1", ["bad"], 1)

    restarted = start({**env, "PET_MASTER_PORT": str(free_port())})
    log = restarted.communicate(timeout=120)[0]
    assert restarted.returncode == 0, log
    assert "already complete (1 of 2 items); nothing to do" in log

    recreated = start({**env, "KUBEINFER_JOB_FILE": str(job_json(spec, tmp_path / "job2.json", uid="uid-2")),
                       "PET_MASTER_PORT": str(free_port())})
    log = recreated.communicate(timeout=400)[0]
    assert recreated.returncode != 0, log
    assert "2 items, 1 already committed, 1 to do" in log, "only the failed item is retried"


def test_metrics_endpoint_sums_the_ranks(flux_dir: Path, tmp_path: Path) -> None:
    """One /metrics per pod, aggregating its torchrun processes (prometheus multiprocess mode)."""
    out = tmp_path / "out"
    spec = {"model": {"uri": str(flux_dir), "dtype": "float32"},
            "task": {"type": "text-to-image", "parameters": PARAMS}, "inputs": {"prompts": ["a", "b", "c"]},
            "workers": {"nodes": 1, "processesPerNode": 2}, "output": {"uri": str(out)}}
    job = job_json(spec, tmp_path / "job.json")
    metrics_port = free_port()
    env = {**worker_env(job, 0, free_port(), tmp_path, metrics_port), "PET_NNODES": "1", "PET_NPROC_PER_NODE": "2",
           "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBEINFER_PROGRESS": "off"}  # "in a pod": idles when done
    worker = start(env)
    try:
        deadline = time.monotonic() + 300
        while psutil.Process(worker.pid).children() or not (out / "_SUCCESS").exists():  # torchrun still running
            assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()[0]
            time.sleep(0.5)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'kubeinfer_items_total{result="succeeded"} 3.0' in text
        assert "kubeinfer_upload_bytes_total" in text and "kubeinfer_item_seconds_count 3.0" in text
        time.sleep(1)
        assert worker.poll() is None, "a finished worker in a pod idles instead of exiting (no restart loop)"
    finally:
        worker.terminate()
        worker.communicate(timeout=60)
    assert worker.returncode == 0, "SIGTERM while idle is a clean exit"


def test_a_pod_stopped_after_its_ranks_finished_exits_instead_of_idling(flux_dir: Path, tmp_path: Path) -> None:
    """Node 1's rank is done and its launcher waits in torch's exit barrier for node 0's (held) rank when the
    pod gets its one SIGTERM (deleted: the job failed or was suspended). The barrier's C++ wait keeps the
    launcher's handler from running for up to 300 s, and a launcher that then exits 0 used to leave the
    worker idling for a SIGTERM already spent: either way the pod lasted until the grace period's SIGKILL."""
    out = tmp_path / "out"
    spec = {"model": {"uri": str(flux_dir), "dtype": "float32"},
            "task": {"type": "text-to-image", "parameters": PARAMS}, "inputs": {"prompts": ["one", "two"]},
            "workers": {"nodes": 2}, "output": {"uri": str(out)}}
    job, port = job_json(spec, tmp_path / "job.json"), free_port()
    in_pod = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", HOLD_ENV: "0:1"}  # rank 0 holds after its one item
    node0 = start({**worker_env(job, 0, port, tmp_path), **in_pod})
    node1 = start({**worker_env(job, 1, port, tmp_path), **in_pod})
    try:
        deadline = time.monotonic() + 300
        while not (out / "items").is_dir() or len(list((out / "items").iterdir())) < 2 or any(
                p.children() for p in psutil.Process(node1.pid).children()):  # node 1's rank has not ended yet
            assert node1.poll() is None and time.monotonic() < deadline, node1.communicate()[0]
            time.sleep(0.2)
        node1.terminate()
        log = node1.communicate(timeout=120)[0]
        assert node1.returncode == 0, log
    finally:
        for node in (node0, node1):
            if node.poll() is None:
                for process in [*psutil.Process(node.pid).children(recursive=True), psutil.Process(node.pid)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.kill()
            node.communicate()
