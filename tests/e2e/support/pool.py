"""A pool of extra nodes for scheduling tests: given capacity and labels, tainted so only jobs that
tolerate the taint land there, cordoned and uncordoned to take room away and give it back, and a
node reserved for one job to decide which waiting job gets a freed place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from e2e.support.cluster import Cluster, Manifest, wait_for

RESERVED_FOR = "kubeinfer-e2e/reserved-for"


@dataclass
class Pool:
    cluster: Cluster
    node_labels: dict[str, dict[str, str]]  # node name -> its own labels (besides `label`)
    label: tuple[str, str]  # every pool node has it; pool jobs select it

    @property
    def nodes(self) -> list[str]:
        return list(self.node_labels)

    @property
    def taint(self) -> str:
        return f"{self.label[0]}={self.label[1]}:NoSchedule"

    def cordon(self, *nodes: str) -> None:
        self.cluster.kubectl("cordon", *nodes)

    def uncordon(self, *nodes: str) -> None:
        self.cluster.kubectl("uncordon", *nodes)

    def reserve(self, node: str, job: Manifest) -> None:
        """Only `job`'s workers may land on `node` (a taint it alone tolerates) until `release`."""
        key, value = RESERVED_FOR, job["metadata"]["name"]
        self.cluster.kubectl("taint", "nodes", node, f"{key}={value}:NoSchedule", "--overwrite")
        workers = job["spec"]["workers"]
        workers["tolerations"] = [*workers.get("tolerations", []), {
            "key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}]

    def release(self, *nodes: str) -> None:
        for node in nodes:
            self.cluster.kubectl("taint", "nodes", node, f"{RESERVED_FOR}:NoSchedule-", check=False)

    def occupants(self) -> list[str]:
        """Pods bound to a pool node (an earlier test's workers may still be terminating)."""
        out = []
        for node in self.nodes:
            found = self.cluster.kubectl("get", "pods", "-A", "-o", "name", f"--field-selector=spec.nodeName={node}")
            out += found.stdout.split()
        return out

    def wait_empty(self) -> None:
        wait_for(lambda: not self.occupants(), "the pool empty of earlier tests' pods", 120, interval=1)

    def admit(self, manifest: Manifest) -> Manifest:
        """The job's workers select the pool and tolerate its taint (in place; returned for chaining)."""
        workers = manifest["spec"]["workers"]
        workers["nodeSelector"] = {**workers.get("nodeSelector", {}), self.label[0]: self.label[1]}
        workers["tolerations"] = [*workers.get("tolerations", []), {
            "key": self.label[0], "operator": "Equal", "value": self.label[1], "effect": "NoSchedule"}]
        return manifest


@contextmanager
def node_pool(cluster: Cluster, roles: dict[str, dict[str, str]], label: tuple[str, str], cpu: str) -> Iterator[Pool]:
    """Start a node per role (named like the run's other nodes; one node agent each, as the run's own
    nodes have), yield the pool, then stop and delete the nodes."""
    from e2e.support.local import LocalBackend

    backend = cluster.backend
    if not isinstance(backend, LocalBackend):
        pytest.fail("scheduling tests need node agents with a given capacity: run them on --cluster=local")
    pool = Pool(cluster, {backend.node_name(role): labels for role, labels in roles.items()}, label)
    agents = []
    try:
        for role, labels in roles.items():
            agents.append(backend.start_pool([role], cpu=cpu, labels={**labels, label[0]: label[1]}, taint=pool.taint))
        yield pool
    finally:
        for agent in agents:
            agent.stop()
        cluster.kubectl("delete", "node", *pool.nodes, "--ignore-not-found", check=False)
