"""Helpers for the strategy tests: tiny models (built once, cached) and real torchrun launches on CPU."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubeinfer_api.jobconfig import JobConfig, make_job_config
from kubeinfer_api.validation import parse_spec
from kubeinfer_runtime.launch import preload_env

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("strategy_worker.py")
PROMPTS = ["a red fox", "a blue whale", "the old lighthouse", "a bowl of ramen", "neon city at night",
           "a paper boat", "snow on pine trees"]


def make_items(count: int, seed: int = 7, start: int = 0) -> list[dict[str, Any]]:
    return [{"index": i, "id": f"item-{i:05d}", "prompt": PROMPTS[i % len(PROMPTS)], "seed": seed + i}
            for i in range(start, start + count)]


def job_config(spec: dict[str, Any], uid: str = "") -> JobConfig:
    """The job config the operator would make from a (partial) spec dict."""
    full = {"inputs": {"prompts": ["x"]}, "output": {"uri": "/tmp/unused"}, **spec}
    return make_job_config("t", parse_spec(full), uid=uid)


def job_json(spec: dict[str, Any], path: Path, uid: str = "") -> Path:
    """A job.json as the operator would write it, from a (partial) spec dict."""
    path.write_text(job_config(spec, uid).to_json())
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(spec: dict[str, Any], model_dir: Path, cases: dict[str, list[dict[str, Any]]], nproc: int,
           tmp: Path, timeout: int = 180, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run the strategy worker under the product's launcher (torchrun, forked ranks) with `nproc` gloo
    processes; return each rank's report."""
    tmp.mkdir(parents=True, exist_ok=True)
    cases_file = tmp / "cases.json"
    cases_file.write_text(json.dumps(cases))
    path = os.pathsep.join(str(REPO / p) for p in ("api", "runtime", "tests"))
    config, job = job_config(spec), tmp / "job.json"
    job.write_text(config.to_json())
    env = {**preload_env(config.spec.task.type), **os.environ, **(env or {}), "PYTHONPATH": path,
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-u", "-m", "kubeinfer_runtime.forkrun", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(WORKER),
           str(job), str(model_dir), str(cases_file), str(tmp)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"the launcher exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return [pickle.loads((tmp / f"rank{r}.pkl").read_bytes()) for r in range(nproc)]


def merged(reports: list[dict[str, Any]], case: str) -> dict[int, tuple[Any, str | None]]:
    """index -> (output, error) over all ranks, failing if any item was produced twice."""
    out: dict[int, tuple[Any, str | None]] = {}
    for report in reports:
        assert report["load_error"] is None, report["load_error"]
        for index, output, error in report["cases"][case]:
            assert index not in out, f"item {index} produced twice"
            out[index] = (output, error)
    return out


Launcher = Callable[..., list[dict[str, Any]]]




def run_inline(spec: dict[str, Any], model_dir: Path, items: list[dict[str, Any]]) -> list[Any]:
    """The strategy in this process (world size 1): for bad-input checks that need no peers."""
    from kubeinfer_api.jobconfig import JobConfig
    from kubeinfer_runtime.distributed import init_distributed
    from kubeinfer_runtime.strategies import Item, RunContext, strategy_for

    with tempfile.TemporaryDirectory() as tmp:
        job = JobConfig.model_validate_json(job_json(spec, Path(tmp) / "job.json").read_text())
    ctx = RunContext(job=job, dist=init_distributed("gloo"), model_dir=model_dir, strategy=job.plan.strategy)
    strategy = strategy_for(job.plan.strategy)(ctx)
    strategy.load()
    return list(strategy.run([Item(**raw) for raw in items]))
