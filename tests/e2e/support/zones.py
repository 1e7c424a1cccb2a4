"""Two zones of two 2-CPU nodes (one worker each) and jobs whose preferences would split them."""

from __future__ import annotations

from contextlib import AbstractContextManager

from e2e.support.cluster import Cluster, Manifest, wait_for
from e2e.support.jobs import fault_job
from e2e.support.pool import Pool, node_pool
from kubeinfer_api import naming

ZONE = "topology.kubernetes.io/zone"


def zone_pool(cluster: Cluster, prefix: str) -> AbstractContextManager[Pool]:
    """Nodes `<prefix>-a1`, `-a2` in zone-a and `-b1`, `-b2` in zone-b; `prefix` also names the pool
    label, so two modules never share nodes."""
    roles = {f"{prefix}-{z}{i}": {ZONE: f"zone-{z}"} for z in "ab" for i in (1, 2)}
    return node_pool(cluster, roles, ("kubeinfer-e2e/pool", prefix), cpu="2")


def split_job(pool: Pool, name: str, namespace: str, topology: bool, gang: str = "Auto") -> Manifest:
    """Two 2-CPU workers that prefer the first node of each zone (weight 100): without a topology
    constraint they take one zone each."""
    manifest = pool.admit(fault_job(name, namespace, prompts=4, steps=2, nodes=2, item_delay=0))
    spec = manifest["spec"]
    spec["workers"]["resources"] = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    firsts = [node for node in pool.nodes if node.endswith("1")]
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": firsts}]}
    spec["workers"]["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": term}]}}
    spec["scheduling"] = {"gang": gang, **({"topologyKey": ZONE} if topology else {})}
    return manifest


def placed_zones(pool: Pool, namespace: str, job: str, count: int) -> list[str]:
    """The zones of the job's workers once all `count` are bound."""
    def bound() -> list[str]:
        pods = pool.cluster.items("pods", namespace, f"{naming.JOB_LABEL}={job}")
        nodes = [p["spec"].get("nodeName") for p in pods]
        return [pool.node_labels[n][ZONE] for n in nodes] if len(pods) == count and all(nodes) else []

    placed: list[str] = wait_for(bound, f"{job}: {count} workers bound", 180)
    return placed
