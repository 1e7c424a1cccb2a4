"""The ranks' launcher (kubeinfer_runtime.forkrun) against torchrun itself, on the same script.

On a machine without a GPU its ranks are forks of the launcher (torch already imported), and each must
still see what a torchrun rank sees: the same torch environment, a working process group, default
signal handlers, its own exit code honoured.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rank_processes import RANK_NAME_PREFIX

from kubeinfer_runtime.launch import PRELOAD_ENV, TASK_MODULES, preload_env

pytestmark = pytest.mark.runtime

SCRIPT = '''
import gc, json, os, signal, sys, time
forked = "torch" in sys.modules  # an exec'd rank has imported nothing yet
frozen = gc.get_freeze_count()  # objects inherited from a launcher that froze them before forking
library = sys.modules.get("probe_library")  # named in KUBEINFER_PRELOAD by one test
library_from = None if library is None else "launcher" if library.IMPORTED_BY != os.getpid() else "rank"
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([dist.get_rank() + 1])
dist.all_reduce(total)
torch_env = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
             "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
             "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE")
report = {"pid": os.getpid(), "forked": forked, "name": open("/proc/self/comm").read().strip(),
          "argv": [os.path.basename(sys.argv[0]), *sys.argv[2:]],
          "main": __name__, "sum": int(total.item()), "threads": torch.get_num_threads(),
          "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "library_from": library_from,
          "frozen": frozen,
          "env": {k: os.environ.get(k) for k in torch_env}}
out = sys.argv[1]
with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump(report, f)
dist.barrier()  # every report is written
rank, code = dist.get_rank(), int(sys.argv[2])
dist.destroy_process_group()
if code and rank == 0:  # finishes first, with a handler that ignores SIGTERM (as a draining rank's does)
    signal.signal(signal.SIGTERM, lambda *_: None)
if code and rank == 1:  # fails once rank 0 has finished: its SIGTERM (15: bit 14 of SigCgt) is no longer caught
    status = f"/proc/{json.load(open(os.path.join(out, 'rank0.json')))['pid']}/status"
    deadline = time.monotonic() + 20  # bounded: a rank that never stops catching it fails the test below
    while time.monotonic() < deadline and os.path.exists(status) and int(next(
            line.split()[1] for line in open(status) if line.startswith("SigCgt:")), 16) & (1 << 14):
        time.sleep(0.05)
    sys.exit(code)
'''


Run = subprocess.CompletedProcess[str]


def launch(launcher: str, tmp: Path, exit_code: int = 0, env: dict[str, str] | None = None,
           nproc: int = 2) -> tuple[Run, list[dict[str, Any]]]:
    script = tmp / "probe.py"
    script.write_text(SCRIPT)
    out = tmp / f"{launcher.rsplit('.', 1)[-1]}-{nproc}"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    proc = subprocess.run([sys.executable, "-u", "-m", launcher, "--standalone", "--nproc-per-node", str(nproc),
                           "--max-restarts", "0", str(script), str(out), str(exit_code)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    reports = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    return proc, reports


def comparable(env: dict[str, str | None]) -> dict[str, str | None]:
    """The torch variables whose values do not depend on the run (the port and run id are fresh each time)."""
    return {k: v for k, v in env.items() if k not in ("MASTER_PORT", "TORCHELASTIC_RUN_ID")}


def test_forked_ranks_see_what_torchrun_ranks_see(tmp_path: Path) -> None:
    ours, forked = launch("kubeinfer_runtime.forkrun", tmp_path)
    theirs, execd = launch("torch.distributed.run", tmp_path)
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert theirs.returncode == 0, theirs.stderr[-3000:]
    assert [r["forked"] for r in forked] == [True, True], "the ranks were not forked from the launcher"
    assert [r["forked"] for r in execd] == [False, False]
    assert all(r["frozen"] > 10_000 for r in forked), "the launcher did not freeze its heap before forking"
    assert [r["name"] for r in forked] == [f"{RANK_NAME_PREFIX}0", f"{RANK_NAME_PREFIX}1"]
    for mine, reference in zip(forked, execd, strict=True):
        assert comparable(mine["env"]) == comparable(reference["env"])
        assert mine["env"]["MASTER_PORT"] and mine["env"]["TORCHELASTIC_RUN_ID"]
        for key in ("argv", "main", "sum", "threads", "sigterm_default"):
            assert mine[key] == reference[key], key
    assert forked[0]["sum"] == 3 and forked[0]["main"] == "__main__" and forked[0]["sigterm_default"]


def test_a_rank_that_exits_non_zero_fails_the_launch_and_ends_the_finished_ranks(tmp_path: Path) -> None:
    """Rank 0 finishes (a fork then waits in torch's wrapper for the others) holding a SIGTERM handler that
    ignores the signal; rank 1 then fails. The agent's SIGTERM must end rank 0 at once, as an exec'd rank
    would already be gone, not after torch's 30-second shutdown timeout and a SIGKILL."""
    ours, reports = launch("kubeinfer_runtime.forkrun", tmp_path, exit_code=3)
    assert len(reports) == 2, ours.stderr[-3000:]
    assert ours.returncode != 0, "rank 1 exited 3, yet the launcher reported success"
    assert "exitcode: 3" in ours.stderr, ours.stderr[-3000:]
    assert "Unable to shutdown process" not in ours.stderr, "the finished rank ignored the agent's SIGTERM"


def test_the_ranks_inherit_the_modules_the_launcher_preloads(tmp_path: Path) -> None:
    """KUBEINFER_PRELOAD (the worker names the task's libraries): each forked rank of a multi-rank launch starts
    with them imported by the launcher; one that cannot be imported is left to the rank with a warning, and the
    launch goes on. A single rank imports for itself (nothing to share)."""
    (tmp_path / "probe_library.py").write_text("import os\nIMPORTED_BY = os.getpid()\n")
    env = {PRELOAD_ENV: "probe_library, no_such_library",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    ours, reports = launch("kubeinfer_runtime.forkrun", tmp_path, env=env)
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert [r["library_from"] for r in reports] == ["launcher", "launcher"]
    assert "could not preload no_such_library" in ours.stderr, ours.stderr[-3000:]
    alone, reports = launch("kubeinfer_runtime.forkrun", tmp_path, env=env, nproc=1)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert [r["library_from"] for r in reports] == [None]


@pytest.mark.parametrize("task", sorted(TASK_MODULES))
def test_the_preloaded_modules_exist_in_the_installed_libraries(task: str) -> None:
    """A module renamed by a library upgrade would only log a warning in every pod: fail here instead."""
    assert preload_env(task)[PRELOAD_ENV].split(",") == list(TASK_MODULES[task])
    for name in TASK_MODULES[task]:
        assert importlib.util.find_spec(name) is not None, f"{name} ({task}) is not in the installed libraries"
