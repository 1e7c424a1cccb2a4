"""Waiting for the master: DNS first, then the port, bounded, with one specific error (also for the operator)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from strategy_harness import REPO, free_port, job_json

from kubeinfer_runtime.rendezvous import RendezvousTimeout, wait_for_master


def test_returns_once_the_port_accepts() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert wait_for_master("127.0.0.1", server.getsockname()[1], timeout_s=5) >= 0


def test_closed_port_times_out_with_a_specific_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEINFER_TERMINATION_LOG", str(tmp_path / "termination-log"))
    port = free_port()
    with pytest.raises(RendezvousTimeout, match=rf"^RendezvousTimeout: 127.0.0.1:{port} unreachable after 1 s "
                                                r"\(does not accept connections\)"):
        wait_for_master("127.0.0.1", port, timeout_s=1, poll_s=0.2)
    assert (tmp_path / "termination-log").read_text().startswith(f"RendezvousTimeout: 127.0.0.1:{port}")


def test_unresolvable_name_times_out() -> None:
    with pytest.raises(RendezvousTimeout, match=r"no-such-master.invalid:29500 unreachable .* \(does not resolve\)"):
        wait_for_master("no-such-master.invalid", 29500, timeout_s=1, poll_s=0.2)


def test_node_rank_zero_does_not_wait_for_its_own_port() -> None:
    assert wait_for_master("127.0.0.1", free_port(), timeout_s=5, check_port=False) < 5


def test_worker_entrypoint_exits_nonzero_with_the_reason(tmp_path: Path) -> None:
    """`kubeinfer-worker` on node 1 whose master never appears: exit 1, message in the termination log."""
    spec = {"model": {"uri": "/m"}, "rendezvous": {"timeoutSeconds": 10}, "output": {"uri": str(tmp_path / "out")}}
    env = {**os.environ, "KUBEINFER_JOB_FILE": str(job_json(spec, tmp_path / "job.json")),
           "PET_MASTER_ADDR": "no-such-master.invalid", "PET_MASTER_PORT": "29511", "PET_NODE_RANK": "1",
           "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "KUBEINFER_TERMINATION_LOG": str(tmp_path / "term"),
           "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("api", "runtime"))}
    proc = subprocess.run([sys.executable, "-m", "kubeinfer_runtime.worker"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "RendezvousTimeout: no-such-master.invalid:29511 unreachable after 10 s" in proc.stderr
    assert (tmp_path / "term").read_text().startswith("RendezvousTimeout: no-such-master.invalid:29511")
