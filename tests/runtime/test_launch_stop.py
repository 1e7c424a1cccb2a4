"""What a pod told to stop (SIGTERM) returns, by what its launcher had when the signal came (`run_ranks`).

The launchers here are small Python processes standing in for torchrun's: the timing they fix, a SIGTERM
that reaches the launcher's own handler between two store calls of its exit barrier (torch then raises
SignalException and exits 1), happens only by chance with torchrun (tests/runtime/test_worker.py met it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.runtime

DRIVER = """
import sys
from pathlib import Path
from kubeinfer_runtime.launch import run_ranks
print("CODE", run_ranks([sys.executable, "-c", sys.argv[1]], {}, Path(sys.argv[2])), flush=True)
"""
#: Exits 1 from its SIGTERM handler, as torch's launcher does when the signal finds it in Python.
LAUNCHER_WITHOUT_RANKS = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
open(os.path.join(os.environ["KUBEINFER_RUN_DIR"], "ready"), "w").close()
time.sleep(60)
"""
#: Has a rank when the stop comes: ends it and exits with the rank's (drained) failure.
LAUNCHER_WITH_A_RANK = """
import os, signal, subprocess, sys, time
rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
signal.signal(signal.SIGTERM, lambda *_: (rank.kill(), rank.wait(), sys.exit(3)))
open(os.path.join(os.environ["KUBEINFER_RUN_DIR"], "ready"), "w").close()
time.sleep(60)
"""


def stopped_pod_code(launcher: str, run_dir: Path) -> int:
    run_dir.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, launcher, str(run_dir)], stdout=subprocess.PIPE,
                              text=True)
    deadline = time.monotonic() + 60
    while not (run_dir / "ready").exists():
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0]
        time.sleep(0.05)
    driver.send_signal(signal.SIGTERM)
    out = driver.communicate(timeout=60)[0]
    return int(out.split("CODE")[1])


def test_a_stopped_launcher_without_ranks_ends_the_pod_with_0_however_it_exits(tmp_path: Path) -> None:
    """Its ranks had all succeeded (or never started): a 1 would read as a crash of a pod whose work was done."""
    assert stopped_pod_code(LAUNCHER_WITHOUT_RANKS, tmp_path / "run") == 0


def test_a_stopped_launcher_with_ranks_keeps_its_code(tmp_path: Path) -> None:
    assert stopped_pod_code(LAUNCHER_WITH_A_RANK, tmp_path / "run") == 3
