"""Pod networking: one Linux bridge shared by all agents, a network namespace + veth per pod.

State shared between agent processes (live agents, allocated IPs, host paths created for mount
points) lives in one JSON file guarded by an flock, so several agents can run at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BRIDGE = "kibr0"
HOST_IP = "10.244.0.1"
PREFIX_LEN = 16
NETNS_PREFIX = "ki_"
STATE_DIR = Path(os.environ.get("KUBEINFER_NODE_AGENT_STATE", "/run/kubeinfer-node-agent"))
NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
_FIRST_POD_IP = int(ipaddress.IPv4Address("10.244.1.0"))
_LAST_POD_IP = int(ipaddress.IPv4Address("10.244.255.254"))


def ip(*args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run `ip`; a failure names the exact command so a broken host setup is easy to see."""
    proc = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def netns_name(node: str, pod_uid: str) -> str:
    """Node names cannot hold '_', so `ki_<node>_` selects exactly one node's namespaces."""
    return f"{NETNS_PREFIX}{node}_{pod_uid[:13]}"


def veth_name(netns: str) -> str:
    """Interface names are limited to 15 bytes: a hash keeps them unique and short."""
    return "kv" + hashlib.sha1(netns.encode()).hexdigest()[:11]


@contextlib.contextmanager
def shared_state() -> Iterator[dict[str, Any]]:
    """Read-modify-write the cross-agent state under an exclusive lock."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = STATE_DIR / "state.json"
        state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        state.setdefault("agents", [])
        state.setdefault("ips", {})
        state.setdefault("created_paths", [])
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def existing_netns(prefix: str = NETNS_PREFIX) -> list[str]:
    return sorted(p.name for p in NETNS_DIR.glob(f"{prefix}*")) if NETNS_DIR.exists() else []


def register_agent() -> None:
    """Record this agent and make sure the bridge exists."""
    with shared_state() as state:
        state["agents"] = [p for p in state["agents"] if _alive(p) and p != os.getpid()] + [os.getpid()]
        ensure_bridge()


def unregister_agent() -> None:
    """Forget this agent; the last one out removes the bridge and the mount points it created."""
    with shared_state() as state:
        state["agents"] = [p for p in state["agents"] if _alive(p) and p != os.getpid()]
        if not state["agents"] and not existing_netns():
            _remove_shared(state)


def _remove_shared(state: dict[str, Any]) -> None:
    ip("link", "del", BRIDGE, check=False)
    # deepest first, and only if still empty: never remove something a user put there
    for path in sorted(state["created_paths"], key=len, reverse=True):
        p = Path(path)
        with contextlib.suppress(OSError):
            if p.is_dir():
                p.rmdir()
            elif p.stat().st_size == 0:
                p.unlink()
    state["created_paths"] = []
    state["ips"] = {}


def ensure_bridge() -> None:
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        ip("link", "add", BRIDGE, "type", "bridge")
    if f"{HOST_IP}/{PREFIX_LEN}" not in ip("-4", "addr", "show", "dev", BRIDGE):
        ip("addr", "add", f"{HOST_IP}/{PREFIX_LEN}", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")


def allocate_ip(netns: str) -> str:
    """Lowest free pod IP; entries of namespaces that no longer exist are reclaimed."""
    with shared_state() as state:
        live = set(existing_netns())
        ips: dict[str, str] = {a: n for a, n in state["ips"].items() if n in live or n == netns}
        for addr, owner in ips.items():
            if owner == netns:
                return addr
        used = {int(ipaddress.IPv4Address(a)) for a in ips}
        for candidate in range(_FIRST_POD_IP, _LAST_POD_IP + 1):
            if candidate in used or candidate & 0xFF in (0, 255):
                continue
            addr = str(ipaddress.IPv4Address(candidate))
            ips[addr] = netns
            state["ips"] = ips
            return addr
    raise RuntimeError("pod IP range 10.244.1.0-10.244.255.254 exhausted")


def release_ip(netns: str) -> None:
    with shared_state() as state:
        state["ips"] = {a: n for a, n in state["ips"].items() if n != netns}


def create_pod_network(netns: str) -> str:
    """netns + veth (eth0 inside, on the bridge outside) + loopback + default route; returns the pod IP."""
    delete_pod_network(netns)
    host_if = veth_name(netns)
    peer = "kp" + host_if[2:]
    ip("netns", "add", netns)  # first: allocation reclaims addresses of namespaces that do not exist
    pod_ip = allocate_ip(netns)
    ip("link", "add", host_if, "type", "veth", "peer", "name", peer)
    ip("link", "set", peer, "netns", netns)
    ip("link", "set", host_if, "master", BRIDGE, "up")
    inside = (
        f"link set {peer} name eth0\n"
        f"addr add {pod_ip}/{PREFIX_LEN} dev eth0\n"
        "link set eth0 up\n"
        "link set lo up\n"
        f"route add default via {HOST_IP}\n"
    )
    ip("-n", netns, "-batch", "-", stdin=inside)
    return pod_ip


def netns_pids(netns: str) -> list[int]:
    if not (NETNS_DIR / netns).exists():
        return []
    return [int(p) for p in ip("netns", "pids", netns, check=False).split()]


def kill_netns_processes(netns: str, sig: int = signal.SIGKILL) -> list[int]:
    """Signal every process that lives in the namespace; returns the pids found."""
    pids = netns_pids(netns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return pids


def delete_pod_network(netns: str) -> None:
    """Kill what is left inside, then remove the veth, the namespace and its /etc/netns files."""
    for _ in range(50):
        if not kill_netns_processes(netns):
            break
        time.sleep(0.05)
    ip("link", "del", veth_name(netns), check=False)
    if (NETNS_DIR / netns).exists():
        ip("netns", "del", netns, check=False)
    shutil.rmtree(ETC_NETNS / netns, ignore_errors=True)


def ensure_mount_target(path: str, is_file: bool) -> None:
    """Bind mounts need an existing target; create it on the host once and remember it for removal."""
    target = Path(path)
    if target.exists():
        return
    with shared_state() as state:
        missing = [p for p in [target, *target.parents] if not p.exists()]
        if is_file:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        else:
            target.mkdir(parents=True, exist_ok=True)
        state["created_paths"] = sorted(set(state["created_paths"]) | {str(p) for p in missing})


def cleanup_leftovers(node: str | None) -> list[str]:
    """Remove the pod networks of `node` (or of every node) left by a crashed agent."""
    prefix = f"{NETNS_PREFIX}{node}_" if node else NETNS_PREFIX
    removed = existing_netns(prefix)
    for netns in removed:
        delete_pod_network(netns)
        release_ip(netns)
    for stale in ETC_NETNS.glob(f"{prefix}*") if ETC_NETNS.exists() else []:
        shutil.rmtree(stale, ignore_errors=True)
    with shared_state() as state:
        state["agents"] = [p for p in state["agents"] if _alive(p)]
        if not state["agents"] and not existing_netns():
            _remove_shared(state)
    return removed
