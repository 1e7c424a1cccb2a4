"""The local backend: real control plane + MinIO (H1's fixtures) and test node agents running pods as processes.

Images are recorded, not pulled: the agents map the two image names to the console scripts the
Dockerfile's ENTRYPOINTs run (`kubeinfer-operator`, `kubeinfer-worker`) from the project's venv.
So the operator runs as a real pod with in-cluster config and its ServiceAccount token: it has the
chart's RBAC and nothing more.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.support import shared
from e2e.support.cluster import Cluster
from e2e.support.policies import CACHE_HOST_DIR
from localcluster.binaries import alive_as, binary
from localcluster.controlplane import ControlPlane
from localcluster.node_agent.launcher import NodeAgentProcess, container_log, pod_processes
from localcluster.s3 import S3Server

OPERATOR_IMAGE = "kubeinfer/kubeinfer-operator"
WORKER_IMAGE = "kubeinfer/kubeinfer-runtime"
TAG = "e2e"
NODES = ("a", "b")
SPARE = "spare"
SPARE_TAINT = "kubeinfer-e2e/spare=true:NoSchedule"
ENTRYPOINTS = {"kubeinfer-operator": ["kubeinfer-operator"], "kubeinfer-runtime": ["kubeinfer-worker"]}
AGENT_ENV = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
#: The user of both images (the Dockerfile's `USER 1000:1000`), for pods that set no runAsUser.
IMAGE_USERS = {image: "1000:1000" for image in ENTRYPOINTS}


@dataclass
class LocalBackend:
    """Implements `support.cluster.Backend` on the local cluster."""

    plane: ControlPlane
    s3: S3Server
    workdir: Path
    name: str = "local"
    session: Path | None = None  # the run's shared folder: agents are started once and found by pid file

    @property
    def kubeconfig(self) -> Path:
        return self.plane.admin_kubeconfig

    @property
    def kubectl_bin(self) -> str:
        return str(binary("kubectl"))

    @property
    def helm_bin(self) -> str:
        return str(binary("helm"))

    def ensure_agents(self) -> None:
        """One agent process per node (so one can be lost alone), started by the first worker of the
        run that needs them; the spare node is tainted."""
        assert self.session is not None, "agents are shared through the run's session folder"
        with shared.exclusive(self.session / "agents.lock"):
            started = [node for node in (*self.worker_nodes(), self.spare_node()) if not self._agent_alive(node)]
            for node in started:
                self._start_agent(node)
            if self.spare_node() in started:
                Cluster(self).kubectl("taint", "node", self.spare_node(), SPARE_TAINT, "--overwrite")

    def node_name(self, role: str) -> str:
        """Node names carry the run's id: a run tearing down (or reaping) its nodes never touches another's."""
        assert self.session is not None
        return f"e2e-{self.session.name.rsplit('-', 1)[-1]}-{role}"

    def worker_nodes(self) -> list[str]:
        return [self.node_name(role) for role in NODES]

    def agent_process(self, node: str, *, detach: bool = False) -> NodeAgentProcess:
        """An agent for `node` that runs the project's images from this venv (not started)."""
        return NodeAgentProcess(
            self.kubeconfig, [node], self.workdir, api_port=self.plane.pod_api_port, extra_args=_agent_args(),
            detach=detach,
        )

    def start_pool(self, roles: list[str], *, cpu: str, labels: dict[str, str], taint: str) -> NodeAgentProcess:
        """Extra nodes for scheduling tests (named like the run's others, by role): one agent, tied to this
        process, for all of them, each with `cpu` cores, `labels`, and `taint` so that only jobs tolerating
        it land there. The caller stops it (`.stop()`)."""
        nodes = [self.node_name(role) for role in roles]
        agent = NodeAgentProcess(self.kubeconfig, nodes, self.workdir, api_port=self.plane.pod_api_port, cpu=cpu,
                                 extra_args=_agent_args(labels))
        agent.start()
        for node in nodes:
            Cluster(self).kubectl("taint", "node", node, taint, "--overwrite")
        return agent

    def _start_agent(self, node: str) -> None:
        """Detached: the agent outlives the worker that started it; the run's teardown stops it."""
        assert self.session is not None
        agent = self.agent_process(node, detach=True).start()
        assert agent.proc is not None
        pidfile = shared.agent_pidfile(self.session, node)
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(f"{agent.proc.pid}\n")

    def _agent_alive(self, node: str) -> bool:
        assert self.session is not None
        pidfile = shared.agent_pidfile(self.session, node)
        return pidfile.exists() and alive_as(int(pidfile.read_text()), sys.executable)

    def chart_values(self) -> list[str]:
        """The images, and the Kueue integration on: it acts only for jobs naming a LocalQueue, and the
        Kueue tests need no second install of the shared operator (Kueue's CRDs may come later)."""
        return [
            f"image.repository={OPERATOR_IMAGE}", f"image.tag={TAG}", "image.pullPolicy=Never",
            f"workerImage.repository={WORKER_IMAGE}", f"workerImage.tag={TAG}", "kueue.enabled=true",
            f"policies.jobAuthors.allowedCacheHostPaths={{{CACHE_HOST_DIR}}}",
        ]  # fmt: skip

    def s3_client(self) -> Any:
        return self.s3.client()

    def s3_pod_env(self) -> dict[str, str]:
        return self.s3.env(for_pods=True)

    def s3_host_env(self) -> dict[str, str]:
        return self.s3.env()

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        path = container_log(self.workdir, namespace, pod, container)
        return path.read_text(errors="replace") if path.exists() else f"(no log file {path})"

    def kill_container(self, namespace: str, pod: str) -> None:
        """SIGKILL every process of the pod, as an OOM kill or a segfault would end it."""
        obj = Cluster(self).get("pod", pod, namespace)
        assert obj is not None, f"pod {namespace}/{pod} does not exist"
        pids = pod_processes(obj["spec"]["nodeName"], obj["metadata"]["uid"])
        assert pids, f"pod {namespace}/{pod} has no running process"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def container_identity(self, namespace: str, pod: str) -> tuple[int, bool]:
        """The uid of the pod's process and whether `/` is mounted read-only for it, from /proc."""
        obj = Cluster(self).get("pod", pod, namespace)
        assert obj is not None, f"pod {namespace}/{pod} does not exist"
        pids = pod_processes(obj["spec"]["nodeName"], obj["metadata"]["uid"])
        assert pids, f"pod {namespace}/{pod} has no running process"
        status = Path(f"/proc/{pids[0]}/status").read_text()
        uid = int(status.split("\nUid:")[1].split()[1])  # real, effective, saved, fs: the effective one
        root = next(line.split() for line in Path(f"/proc/{pids[0]}/mountinfo").read_text().splitlines()
                    if line.split()[4] == "/")
        return uid, "ro" in root[5].split(",")

    def lose_node(self, node: str) -> None:
        """Power loss: the agent and every pod process on the node die; the lease stops."""
        assert self.session is not None
        pidfile = shared.agent_pidfile(self.session, node)
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        pidfile.unlink(missing_ok=True)
        self.agent_process(node).cleanup()

    def restore_node(self, node: str) -> None:
        if not self._agent_alive(node):
            self._start_agent(node)

    def spare_node(self) -> str:
        return self.node_name(SPARE)

    def stop_s3(self) -> None:
        self.s3.stop()

    def start_s3(self) -> None:
        """Start MinIO again on the same port, data and credentials, so pods keep their endpoint."""
        self.s3.restart()

    def log_files(self) -> list[Path]:
        agent_logs = sorted(self.workdir.glob("agent-*.log"))
        return [*self.plane.log_files(), self.s3.log_file, *agent_logs]


def _agent_args(labels: dict[str, str] | None = None) -> list[str]:
    """The project's images mapped to its console scripts, the pods' env, and extra node labels."""
    args = [arg for image, argv in ENTRYPOINTS.items() for arg in ("--entrypoint", f"{image}={json.dumps(argv)}")]
    args += [arg for key, value in AGENT_ENV.items() for arg in ("--env", f"{key}={value}")]
    args += [arg for image, user in IMAGE_USERS.items() for arg in ("--image-user", f"{image}={user}")]
    return args + [arg for key, value in (labels or {}).items() for arg in ("--label", f"{key}={value}")]
