"""Two zones of two 2-CPU nodes (one worker each) and jobs whose preferences would split them."""

from __future__ import annotations

from contextlib import AbstractContextManager

from e2e.support.cluster import Cluster, Manifest, wait_for
from e2e.support.jobs import fault_job
from e2e.support.pool import Pool, node_pool
from kubeinfer_api import naming

ZONE = "topology.kubernetes.io/zone"
ZONES = {"e2e-zone-a1": "zone-a", "e2e-zone-a2": "zone-a", "e2e-zone-b1": "zone-b", "e2e-zone-b2": "zone-b"}
ZONE_LABEL = ("kubeinfer-e2e/pool", "zones")


def zone_pool(cluster: Cluster) -> AbstractContextManager[Pool]:
    return node_pool(cluster, {node: {ZONE: zone} for node, zone in ZONES.items()}, ZONE_LABEL, cpu="2")


def split_job(pool: Pool, name: str, namespace: str, topology: bool, gang: str = "Auto") -> Manifest:
    """Two 2-CPU workers that prefer e2e-zone-a1 and e2e-zone-b1 (one node in each zone, weight 100):
    without a topology constraint they take one zone each."""
    manifest = pool.admit(fault_job(name, namespace, prompts=4, steps=2, nodes=2))
    spec = manifest["spec"]
    spec["workers"]["resources"] = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                  "values": ["e2e-zone-a1", "e2e-zone-b1"]}]}
    spec["workers"]["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": term}]}}
    spec["scheduling"] = {"gang": gang, **({"topologyKey": ZONE} if topology else {})}
    return manifest


def placed_zones(cluster: Cluster, namespace: str, job: str, count: int) -> list[str]:
    """The zones of the job's workers once all `count` are bound."""
    def bound() -> list[str]:
        pods = cluster.items("pods", namespace, f"{naming.JOB_LABEL}={job}")
        nodes = [p["spec"].get("nodeName") for p in pods]
        return [ZONES[n] for n in nodes] if len(pods) == count and all(nodes) else []

    zones: list[str] = wait_for(bound, f"{job}: {count} workers bound", 180)
    return zones
