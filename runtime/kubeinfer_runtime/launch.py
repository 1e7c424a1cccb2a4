"""Start the ranks with torchrun's launcher and bring back the first rank's error.

The launcher is `kubeinfer_runtime.forkrun`: torch's own parser, rendezvous and elastic agent, with ranks
forked from it instead of exec'd (each saves a torch import). In a pod it takes --nnodes/--node-rank/
--master-addr/--master-port/--nproc-per-node from the PET_* env the operator sets; locally it runs
`--standalone` with an explicit process count.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

#: Where ranks leave their error messages for the launcher (see rank.record_error).
RUN_DIR_ENV = "KUBEINFER_RUN_DIR"
#: Library progress bars and hints drown the progress line in `kubectl logs`; the user's env wins.
QUIET = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
         "TOKENIZERS_PARALLELISM": "false"}


#: Modules the launcher imports before it forks its ranks (comma-separated), so that no rank imports them again.
PRELOAD_ENV = "KUBEINFER_PRELOAD"
#: The libraries' base modules the ranks of each task type import (1.4-1.7 CPU-seconds of a rank's start on CPU;
#: the model's own classes on top of them cost little).
TASK_MODULES = {
    "text-to-image": ("diffusers.pipelines.pipeline_utils", "diffusers.models.modeling_utils",
                      "transformers.modeling_utils", "transformers.image_processing_utils"),
    "text-generation": ("transformers.modeling_utils", "transformers.generation.utils",
                        "transformers.models.auto.modeling_auto", "transformers.models.auto.tokenization_auto"),
}


def preload_env(task_type: str) -> dict[str, str]:
    """The launcher's PRELOAD_ENV for a job of `task_type` (merge it under the user's env: theirs wins)."""
    return {PRELOAD_ENV: ",".join(TASK_MODULES.get(task_type, ()))}


def torchrun_argv(nproc: int | None = None, standalone: bool = False) -> list[str]:
    argv = [sys.executable, "-u", "-m", "kubeinfer_runtime.forkrun", "--max-restarts", "0"]
    if standalone:
        argv += ["--standalone", "--nnodes", "1"]
    if nproc is not None:
        argv += ["--nproc-per-node", str(nproc)]
    return [*argv, "-m", "kubeinfer_runtime.rank"]


def make_run_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="kubeinfer-run-"))


#: Once the pod is told to stop, a launcher with no ranks left has nothing to drain: it is in torch's
#: rendezvous or exit barrier, blocked in the store's C++ wait where its SIGTERM handler cannot run (up to
#: 300 s, past the pod's grace period). It gets this long to exit on its own, then is killed.
LAUNCHER_GRACE_S = 5.0


class _Stopped(Exception):
    """Raised from the signal handler to leave `Popen.wait` and watch the stopping launcher."""


def run_ranks(argv: list[str], env: dict[str, str], run_dir: Path, stopped: threading.Event | None = None) -> int:
    """Run the launcher to the end, forwarding SIGTERM/SIGINT so the ranks stop with the pod; `stopped` is set
    when such a signal came."""
    proc = subprocess.Popen(argv, env={**QUIET, **env, RUN_DIR_ENV: str(run_dir)})
    stop = stopped if stopped is not None else threading.Event()
    waiting = threading.Event()  # raise only inside the plain wait below, never from the cleanup
    ranks_at_stop: list[bool] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not ranks_at_stop:
            ranks_at_stop.append(has_children(proc.pid))  # before the launcher can pass the signal on
        proc.send_signal(signum)
        stop.set()
        if waiting.is_set():
            waiting.clear()
            raise _Stopped

    previous = {}
    try:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, forward)
            waiting.set()
            code = proc.wait()
            waiting.clear()
        except _Stopped:
            code = wait_stopping(proc, ranks_at_stop[0])
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_stopping(proc: subprocess.Popen[bytes], had_ranks: bool) -> int:
    """Wait for a launcher told to stop; kill it once it has had no ranks for LAUNCHER_GRACE_S.

    Where it had no ranks from the stop on (they had all succeeded, or had not started), the pod's result is
    0 however the launcher ends: killed here, or by its own handler (torch's SignalException, exit 1) where
    the signal caught it between two store calls. A 1 would read as a crash (a preempted pod whose work was
    done counted as a failure). A launcher that had ranks keeps its code: a drained rank's error says why.
    """
    idle_since: float | None = None
    while True:
        try:
            code = proc.wait(timeout=0.5)
            return code if had_ranks else 0
        except subprocess.TimeoutExpired:
            pass
        if has_children(proc.pid):
            had_ranks, idle_since = True, None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > LAUNCHER_GRACE_S:
            log.info("the launcher has had no ranks for %.0f s since the stop signal: ending it", LAUNCHER_GRACE_S)
            proc.kill()
            proc.wait()
            return 0


def has_children(pid: int) -> bool:
    """Whether any process has `pid` as its parent (from /proc: the runtime has no psutil)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                return True
        except (OSError, IndexError):
            continue  # exited while we looked
    return False


def first_error(run_dir: Path) -> str | None:
    """The error of the rank that failed first (later ones are usually consequences)."""
    files = sorted((run_dir / "errors").glob("rank-*.txt"), key=lambda p: p.stat().st_mtime)
    return files[0].read_text() if files else None
