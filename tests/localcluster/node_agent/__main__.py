"""CLI: `python -m localcluster.node_agent --kubeconfig K --node N [--node N2] --workdir D ...`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from . import network, security, volumes
from .agent import Agent, AgentConfig


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _taints(values: list[str]) -> list[dict[str, str]]:
    out = []
    for item in values:
        pair, sep, effect = item.rpartition(":")
        key, _, value = pair.partition("=")
        if not sep or not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise SystemExit(f"--register-with-taints {item!r}: expected KEY=VALUE:EFFECT")
        out.append({"key": key, "value": value, "effect": effect})
    return out


def _entrypoints(values: list[str]) -> dict[str, list[str]]:
    out = {}
    for name, raw in _pairs(values, "--entrypoint").items():
        try:
            argv = json.loads(raw)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--entrypoint {name}: {raw!r} is not JSON ({err}); e.g. {name}='[\"{name}\"]'") from err
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise SystemExit(f"--entrypoint {name}: expected a non-empty JSON list of strings, got {raw!r}")
        out[name] = argv
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m localcluster.node_agent", description=__doc__)
    p.add_argument("--kubeconfig", help="admin kubeconfig of the control plane")
    p.add_argument("--node", action="append", default=[], help="node name to register (repeatable)")
    p.add_argument("--workdir", type=Path, required=True, help="logs/ and pods/ go here")
    p.add_argument("--cpu", default="8")
    p.add_argument("--memory", default="32Gi")
    p.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu capacity (advertised only)")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--api-host", default=network.HOST_IP, help="KUBERNETES_SERVICE_HOST given to pods")
    p.add_argument("--api-port", type=int, default=6443, help="KUBERNETES_SERVICE_PORT given to pods")
    p.add_argument("--label", action="append", default=[], help="extra node label KEY=VALUE")
    p.add_argument("--register-with-taints", action="append", default=[], metavar="KEY=VALUE:EFFECT",
                   help="taints the nodes are created with, like kubelet's flag (repeatable)")
    p.add_argument("--env", action="append", default=[], help="extra env KEY=VALUE for every container")
    p.add_argument(
        "--entrypoint",
        action="append",
        default=[],
        help="IMAGE_NAME=JSON_ARGV: what to run for containers of that image that set no command",
    )
    p.add_argument(
        "--image-user",
        action="append",
        default=[],
        help="IMAGE_NAME=UID[:GID]: the user the image runs as when a pod sets no runAsUser (else root)",
    )
    p.add_argument("--lease-seconds", type=int, default=10, help="renewed every quarter of this")
    p.add_argument("--backoff-base", type=float, default=10.0, help="first crash-loop back-off (kubelet: 10s)")
    p.add_argument("--backoff-max", type=float, default=300.0)
    p.add_argument("--kubelet-version", default="v1.37.2")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove pod networks/mounts left by a crashed agent (of --node, else all) and exit",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if not args.cleanup and (not args.kubeconfig or not args.node):
        p.error("--kubeconfig and at least one --node are required (unless --cleanup)")
    return args


def cleanup(workdir: Path, nodes: list[str]) -> None:
    """Kill leftover pod processes, delete their namespaces and veths, unmount their tmpfs volumes."""
    removed: list[str] = []
    for node in nodes or [None]:  # type: ignore[list-item]
        removed += network.cleanup_leftovers(node)
    pods = workdir / "pods"
    uid_prefixes = [netns.rsplit("_", 1)[1] for netns in removed]
    for pod_dir in pods.iterdir() if pods.exists() else []:
        if not nodes or any(pod_dir.name.startswith(prefix) for prefix in uid_prefixes):
            volumes.release(pod_dir)
    print(f"removed {len(removed)} pod network(s): {' '.join(removed)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if os.geteuid() != 0:
        raise SystemExit("the node agent needs root (network namespaces, veths, mounts)")
    if args.cleanup:
        cleanup(args.workdir, args.node)
        return 0
    cfg = AgentConfig(
        kubeconfig=args.kubeconfig,
        nodes=args.node,
        workdir=args.workdir.resolve(),
        cpu=args.cpu,
        memory=args.memory,
        gpus=args.gpus,
        max_pods=args.max_pods,
        api_host=args.api_host,
        api_port=args.api_port,
        labels=_pairs(args.label, "--label"),
        taints=_taints(args.register_with_taints),
        extra_env=_pairs(args.env, "--env"),
        entrypoints=_entrypoints(args.entrypoint),
        image_users=security.image_users(_pairs(args.image_user, "--image-user")),
        lease_seconds=args.lease_seconds,
        backoff_base=args.backoff_base,
        backoff_max=args.backoff_max,
        version=args.kubelet_version,
    )
    agent = Agent(cfg)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        agent.stop.set()
        agent.wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
