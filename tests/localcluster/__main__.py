"""``python -m localcluster up|down|env [--dir D]``: a dev cluster that outlives this command.

``up`` starts every part in the background (pid files under D): the control plane, MinIO, a test
node agent (node ``dev-node``) and the operator installed by ``helm install`` of charts/kubeinfer,
with the tiny models in s3://models/ and the ``s3-credentials`` Secret in ``default``, so
``kubectl apply -f examples/data-text-to-image.yaml`` runs. ``down`` stops them; ``env`` prints the
shell exports again.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from e2e.support.cluster import Cluster
from e2e.support.local import LocalBackend
from e2e.support.models import upload_tiny_models

from localcluster.binaries import binary_path, cache_dir, stop_pidfile
from localcluster.controlplane import ControlPlane
from localcluster.node_agent.launcher import NodeAgentProcess
from localcluster.s3 import S3Server

DEFAULT_DIR = cache_dir() / "dev-cluster"
DEV_NODE = "dev-node"


@dataclass
class DevCluster:
    """The parts of a dev cluster; ``start`` and ``stop`` list them in order."""

    directory: Path
    control_plane: ControlPlane
    s3: S3Server

    @classmethod
    def at(cls, directory: Path) -> DevCluster:
        """A dev cluster in ``directory``, attached to the parts already running there."""
        directory = directory.expanduser().resolve()
        plane_dir, s3_dir = directory / "controlplane", directory / "s3"
        plane = ControlPlane.attach(plane_dir) if (plane_dir / "state.json").exists() else ControlPlane(plane_dir)
        s3 = S3Server.attach(s3_dir) if (s3_dir / "s3.json").exists() else S3Server(s3_dir)
        plane.detach = s3.detach = True
        return cls(directory, plane, s3)

    @property
    def agent_pidfile(self) -> Path:
        return self.directory / "node-agent.pid"

    def start(self) -> None:
        self.control_plane.start()
        self.s3.start()
        self._start_agent()
        self._install()

    def stop(self) -> None:
        stop_pidfile(self.agent_pidfile, Path(sys.executable), timeout=30)
        self._agent().cleanup()
        self.s3.stop()
        self.control_plane.stop()

    def _agent(self) -> NodeAgentProcess:
        backend = LocalBackend(self.control_plane, self.s3, self.directory / "nodes")
        return backend.agent_process(DEV_NODE, detach=True)

    def _start_agent(self) -> None:
        """The node agent, detached: it outlives `up` and `down` stops it by its pid file."""
        agent = self._agent().start()
        assert agent.proc is not None
        self.agent_pidfile.write_text(f"{agent.proc.pid}\n")

    def _install(self) -> None:
        """Buckets, tiny models, the examples' Secret, then the operator from the Helm chart."""
        cluster = Cluster(LocalBackend(self.control_plane, self.s3, self.directory / "nodes"))
        for bucket in ("models", "outputs"):
            self.s3.create_bucket(bucket)
        upload_tiny_models(self.s3.client())
        cluster.create_s3_secret("default")
        cluster.install_operator(upgrade=True)

    def env(self) -> dict[str, str]:
        return {**self.control_plane.env(), **self.s3.env()}


def _exports(cluster: DevCluster) -> str:
    """Shell exports; PATH first gets the pinned kubectl and helm (the machine's may be too old)."""
    tool_dirs = ":".join(shlex.quote(str(binary_path(tool).parent)) for tool in ("kubectl", "helm"))
    lines = [f'export PATH={tool_dirs}:"$PATH"']
    lines += [f"export {key}={shlex.quote(value)}" for key, value in cluster.env().items()]
    return "\n".join(lines) + "\n"


def _print_env(cluster: DevCluster) -> None:
    print(_exports(cluster), end="")


def _up(cluster: DevCluster) -> int:
    if cluster.control_plane.running():
        print(f"# dev cluster already running in {cluster.directory}", file=sys.stderr)
    else:
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
    env_file = cluster.directory / "env.sh"
    env_file.write_text(_exports(cluster))
    plane, s3 = cluster.control_plane, cluster.s3
    print(
        f"# control plane: {plane.server_url} (pods: https://{plane.pod_api_host}:{plane.pod_api_port})\n"
        f"# S3 (MinIO):    {s3.endpoint_url} (pods: {s3.pod_endpoint_url})\n"
        f"# logs:          {plane.logs} {s3.logs} {cluster.directory / 'nodes'}\n"
        f"# use it:        source {env_file}; kubectl apply -f examples/data-text-to-image.yaml; kubectl get dinf -w\n"
        f"# stop it:       python -m localcluster down --dir {cluster.directory}",
        file=sys.stderr,
    )
    _print_env(cluster)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "env"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"state directory (default {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    cluster = DevCluster.at(args.dir)
    if args.command == "up":
        return _up(cluster)
    if args.command == "down":
        cluster.stop()
        print(f"# dev cluster in {cluster.directory} stopped", file=sys.stderr)
        return 0
    if not cluster.control_plane.running():
        print(
            f"no dev cluster running in {cluster.directory}; start one with `python -m localcluster up`",
            file=sys.stderr,
        )
        return 1
    _print_env(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
