"""`make dev-cluster` on top of an earlier one: up, down, up again, as a developer does it.

Before, the second `up` timed out waiting for the operator pod: the pod of the first run was still
listed (ended `Completed` by the node agent's shutdown) and the wait looked at the first pod it found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.support.cluster import OPERATOR_NAMESPACE
from localcluster.binaries import binary_path
from localcluster.controlplane import ControlPlane

pytestmark = pytest.mark.xdist_group("dev-cluster")
REPO = Path(__file__).resolve().parents[2]


def localcluster(command: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("tests", "api", "runtime"))}
    return subprocess.run([sys.executable, "-m", "localcluster", command, "--dir", str(state)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_up_down_up(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    try:
        for step in ("up", "down", "up"):
            done = localcluster(step, state)
            assert done.returncode == 0, f"`{step}` failed:\n{done.stderr[-4000:]}"
        kubeconfig = ControlPlane.attach(state / "controlplane").admin_kubeconfig
        listed = subprocess.run([str(binary_path("kubectl")), "--kubeconfig", str(kubeconfig), "get", "pods", "-n",
                                 OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=kubeinfer", "-o", "json"],
                                capture_output=True, text=True, check=True, timeout=60).stdout
        phases = sorted(p["status"].get("phase", "") for p in json.loads(listed)["items"])
        # The first run's pod was stopped with its node: Failed (replaced), never Succeeded (kept as done).
        assert phases == ["Failed", "Running"], phases
    finally:
        localcluster("down", state)
