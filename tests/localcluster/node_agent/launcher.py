"""Start and control node agent processes from tests and from `python -m localcluster up`."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .kube import Kube
from .network import netns_name, netns_pids

TESTS_DIR = Path(__file__).resolve().parents[2]


def container_log(workdir: Path, namespace: str, pod: str, container: str) -> Path:
    """Where the agent appends a container's stdout+stderr (all restarts, in order)."""
    return workdir / "logs" / f"{namespace}_{pod}_{container}.log"


def _terminate_with_parent() -> None:
    """In the child: SIGTERM (a clean shutdown) when the test process dies, so a killed pytest leaks nothing."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def pod_processes(node: str, pod_uid: str) -> list[int]:
    """Pids of every process of a pod (to kill a worker mid-job the way a crash would)."""
    return netns_pids(netns_name(node, pod_uid))


class NodeAgentProcess:
    """One agent process serving `nodes`; pause()/kill() simulate a lost node.

    Unless `detach`, the agent shuts down cleanly when the process that started it dies.
    """

    def __init__(
        self,
        kubeconfig: Path,
        nodes: Sequence[str],
        workdir: Path,
        *,
        api_port: int,
        api_host: str = "10.244.0.1",
        cpu: str = "8",
        memory: str = "32Gi",
        gpus: int = 0,
        backoff_base: float = 1.0,
        extra_args: Sequence[str] = (),
        detach: bool = False,
    ) -> None:
        self.kubeconfig, self.nodes, self.workdir = kubeconfig, list(nodes), workdir.resolve()
        self.argv = [
            sys.executable, "-m", "localcluster.node_agent",
            "--kubeconfig", str(kubeconfig), "--workdir", str(self.workdir),
            "--api-host", api_host, "--api-port", str(api_port),
            "--cpu", cpu, "--memory", memory, "--gpus", str(gpus), "--backoff-base", str(backoff_base),
            *[arg for node in self.nodes for arg in ("--node", node)], *extra_args,
        ]  # fmt: skip
        self.log_file = self.workdir / f"agent-{'-'.join(self.nodes)}.log"
        self.detach = detach
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> NodeAgentProcess:
        """Start the agent and wait until its nodes are Ready."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])),
        }
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL,
                                         preexec_fn=None if self.detach else _terminate_with_parent)  # fmt: skip
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        kube = Kube(str(self.kubeconfig))
        deadline = time.monotonic() + timeout
        pending = set(self.nodes)
        while pending:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node agent exited with {self.proc.returncode}; see {self.log_file}")
            for node in list(pending):
                obj = kube.get_or_none(f"/api/v1/nodes/{node}")
                conditions = (obj or {}).get("status", {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    pending.discard(node)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"nodes {sorted(pending)} not Ready after {timeout:.0f}s; see {self.log_file}")
            time.sleep(0.2)

    def pause(self) -> None:
        """SIGSTOP: leases stop, pods keep running (a partitioned node)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self, keep_pods: bool = False) -> None:
        """SIGKILL the agent; its pods' processes too unless `keep_pods` (power loss vs. agent crash)."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        if not keep_pods:
            self.cleanup()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (pods stopped, nodes NotReady, network freed); SIGKILL + cleanup if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def cleanup(self) -> None:
        """Remove what a killed agent left behind for its nodes."""
        for node in self.nodes:
            subprocess.run(
                [sys.executable, "-m", "localcluster.node_agent", "--cleanup", "--workdir", str(self.workdir),
                 "--node", node],
                env={**os.environ, "PYTHONPATH": str(TESTS_DIR)}, check=False, capture_output=True,
            )  # fmt: skip

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def container_log(self, namespace: str, pod: str, container: str) -> Path:
        return container_log(self.workdir, namespace, pod, container)

    def __enter__(self) -> NodeAgentProcess:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
