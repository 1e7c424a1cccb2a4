"""Node registration, status and Lease heartbeats: what the node-lifecycle controller watches."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

from .kube import Kube
from .status import now, now_micro

log = logging.getLogger(__name__)
Obj = dict[str, Any]
LEASE_NS = "kube-node-lease"


def node_capacity(cpu: str, memory: str, gpus: int, pods: int) -> dict[str, str]:
    return {
        "cpu": cpu,
        "memory": memory,
        "pods": str(pods),
        "nvidia.com/gpu": str(gpus),
        "ephemeral-storage": "100Gi",
    }


def node_manifest(name: str, labels: dict[str, str], taints: list[Obj] | None = None) -> Obj:
    base = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    }
    node: Obj = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {**base, **labels}}}
    if taints:
        node["spec"] = {"taints": taints}
    return node


def _conditions(existing: list[Obj], ready: bool, reason: str, message: str) -> list[Obj]:
    """The four kubelet conditions; lastTransitionTime moves only when a status changes."""
    old = {c["type"]: c for c in existing}
    wanted = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True" if ready else "False", reason, message),
    ]
    out = []
    for ctype, status, why, text in wanted:
        prev = old.get(ctype, {})
        moved = prev.get("status") != status
        out.append(
            {
                "type": ctype,
                "status": status,
                "reason": why,
                "message": text,
                "lastHeartbeatTime": now(),
                "lastTransitionTime": now() if moved else prev.get("lastTransitionTime", now()),
            }
        )
    return out


def node_status(
    name: str,
    existing: list[Obj],
    capacity: dict[str, str],
    host_ip: str,
    version: str,
    ready: bool,
    reason: str,
    message: str,
) -> Obj:
    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": _conditions(existing, ready, reason, message),
        "addresses": [{"type": "InternalIP", "address": host_ip}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": name,
            "systemUUID": name,
            "bootID": str(os.getpid()),
            "kernelVersion": platform.release(),
            "osImage": "kubeinfer test node agent",
            "containerRuntimeVersion": "kubeinfer-node-agent://0.1.0",
            "kubeletVersion": version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


class NodeHeartbeat:
    """Registers one Node and keeps it alive; stop renewing and the controller marks it NotReady."""

    def __init__(
        self,
        kube: Kube,
        name: str,
        capacity: dict[str, str],
        labels: dict[str, str],
        host_ip: str,
        version: str,
        lease_seconds: int,
        taints: list[Obj] | None = None,
    ) -> None:
        self.kube, self.name, self.capacity = kube, name, capacity
        self.labels, self.host_ip, self.version = labels, host_ip, version
        self.lease_seconds, self.taints = lease_seconds, taints or []
        self.uid = ""

    @property
    def path(self) -> str:
        return f"/api/v1/nodes/{self.name}"

    def register(self) -> None:
        node = self.kube.get_or_none(self.path)
        if node is None:
            node = self.kube.post("/api/v1/nodes", node_manifest(self.name, self.labels, self.taints))
            log.info("registered node %s", self.name)
        elif self.labels:
            node = self.kube.merge_patch(self.path, {"metadata": {"labels": self.labels}})
        self.uid = node["metadata"]["uid"]
        self.beat()

    def beat(
        self, ready: bool = True, reason: str = "KubeletReady", message: str = "kubelet is posting ready status"
    ) -> None:
        """Renew the Lease and post node status."""
        self._renew_lease()
        node = self.kube.get(self.path)
        status = node_status(
            self.name,
            node.get("status", {}).get("conditions") or [],
            self.capacity,
            self.host_ip,
            self.version,
            ready,
            reason,
            message,
        )
        self.kube.merge_patch(self.path + "/status", {"status": status})

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{self.name}"
        lease = self.kube.get_or_none(path)
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": self.lease_seconds, "renewTime": now_micro()}
        if lease is None:
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid}
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": LEASE_NS, "ownerReferences": [owner]},
                "spec": spec,
            }
            self.kube.post(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases", body)
        else:
            lease["spec"].update(spec)
            self.kube.put(path, lease)
