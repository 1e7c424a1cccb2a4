"""Start the ranks with torchrun's launcher and bring back the first rank's error.

The launcher is `kubeinfer_runtime.forkrun`: torch's own parser, rendezvous and elastic agent, with ranks
forked from it instead of exec'd (each saves a torch import). In a pod it takes --nnodes/--node-rank/
--master-addr/--master-port/--nproc-per-node from the PET_* env the operator sets; locally it runs
`--standalone` with an explicit process count.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

#: Where ranks leave their error messages for the launcher (see rank.record_error).
RUN_DIR_ENV = "KUBEINFER_RUN_DIR"
#: Library progress bars and hints drown the progress line in `kubectl logs`; the user's env wins.
QUIET = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
         "TOKENIZERS_PARALLELISM": "false"}


def torchrun_argv(nproc: int | None = None, standalone: bool = False) -> list[str]:
    argv = [sys.executable, "-u", "-m", "kubeinfer_runtime.forkrun", "--max-restarts", "0"]
    if standalone:
        argv += ["--standalone", "--nnodes", "1"]
    if nproc is not None:
        argv += ["--nproc-per-node", str(nproc)]
    return [*argv, "-m", "kubeinfer_runtime.rank"]


def make_run_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="kubeinfer-run-"))


def run_ranks(argv: list[str], env: dict[str, str], run_dir: Path) -> int:
    """Run torchrun to the end, forwarding SIGTERM/SIGINT so the ranks stop with the pod."""
    proc = subprocess.Popen(argv, env={**QUIET, **env, RUN_DIR_ENV: str(run_dir)})

    def forward(signum: int, _frame: FrameType | None) -> None:
        proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def first_error(run_dir: Path) -> str | None:
    """The error of the rank that failed first (later ones are usually consequences)."""
    files = sorted((run_dir / "errors").glob("rank-*.txt"), key=lambda p: p.stat().st_mtime)
    return files[0].read_text() if files else None
