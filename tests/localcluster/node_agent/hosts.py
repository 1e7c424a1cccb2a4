"""Cluster DNS as /etc/hosts files: what CoreDNS would answer for headless-service pods.

A name exists only when a real cluster's DNS would have it: the pod has hostname + subdomain, a
headless Service named like the subdomain selects it, and the pod is ready (or the Service
publishes not-ready addresses). So a missing Service or a wrong selector fails here as it would
on a real cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
CLUSTER_DOMAIN = "cluster.local"


def _selects(service: Obj, pod: Obj) -> bool:
    selector = service.get("spec", {}).get("selector") or {}
    labels = pod["metadata"].get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _ready(pod: Obj) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def published_names(pod: Obj, services: list[Obj]) -> list[str]:
    """The DNS names the cluster publishes for `pod` (empty when it has none)."""
    spec, meta = pod["spec"], pod["metadata"]
    hostname, subdomain = spec.get("hostname"), spec.get("subdomain")
    if not hostname or not subdomain or not pod.get("status", {}).get("podIP"):
        return []
    if pod["status"].get("phase") in ("Succeeded", "Failed"):
        return []
    ns = meta["namespace"]
    for svc in services:
        if svc["metadata"]["namespace"] != ns or svc["metadata"]["name"] != subdomain:
            continue
        headless = svc.get("spec", {}).get("clusterIP") == "None"
        publish = svc.get("spec", {}).get("publishNotReadyAddresses", False)
        deleting = meta.get("deletionTimestamp") is not None
        if headless and _selects(svc, pod) and (publish or (_ready(pod) and not deleting)):
            base = f"{hostname}.{subdomain}"
            return [f"{base}.{ns}.svc.{CLUSTER_DOMAIN}", f"{base}.{ns}.svc", f"{base}.{ns}", base]
    return []


def own_names(pod: Obj) -> list[str]:
    """What kubelet writes for the pod itself: its FQDN (with a subdomain) and its hostname."""
    spec, ns = pod["spec"], pod["metadata"]["namespace"]
    hostname = spec.get("hostname") or pod["metadata"]["name"]
    if spec.get("subdomain"):
        return [f"{hostname}.{spec['subdomain']}.{ns}.svc.{CLUSTER_DOMAIN}", hostname]
    return [hostname]


def hosts_file(pod: Obj, pod_ip: str, pods: list[Obj], services: list[Obj]) -> str:
    """The complete /etc/hosts of `pod`, given every pod and service of the cluster."""
    lines = [
        "# written by the kubeinfer test node agent",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{pod_ip}\t{' '.join(own_names(pod))}",
    ]
    # What DNS would answer, the pod's own names included (kubelet's line above lacks `<pod>.<svc>.<ns>.svc`).
    ns, uid = pod["metadata"]["namespace"], pod["metadata"]["uid"]
    itself = {**pod, "status": {**(pod.get("status") or {}), "podIP": pod_ip}}  # its IP may not be reported yet
    peers = [p for p in pods if p["metadata"]["namespace"] == ns and p["metadata"]["uid"] != uid] + [itself]
    for peer in sorted(peers, key=lambda p: p["metadata"]["name"]):
        names = published_names(peer, services)
        if names:
            lines.append(f"{peer['status']['podIP']}\t{' '.join(names)}")
    for alias in pod["spec"].get("hostAliases") or []:
        lines.append(f"{alias['ip']}\t{' '.join(alias.get('hostnames', []))}")
    return "\n".join(lines) + "\n"


def resolv_conf(namespace: str) -> str:
    """No DNS server: unknown names fail fast against a closed loopback port instead of timing out."""
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"nameserver 127.0.0.1\nsearch {search}\noptions ndots:5 timeout:1 attempts:1\n"


def write_in_place(path: Path, content: str) -> bool:
    """Rewrite without replacing the inode: `ip netns exec` bind-mounted this very file.

    New content is written over the old and then truncated, so a reader sees either the old
    lines or the new ones for the unchanged prefix, never an empty file. Returns True on change.
    """
    data = content.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_bytes() == data:
        return False
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    return True
