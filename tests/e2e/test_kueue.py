"""Kueue admits whole jobs: the real Kueue manager on the local control plane, the operator's Kueue
integration on (chart value kueue.enabled).

A ClusterQueue with quota for two workers (1 CPU, each worker asks 500m): of two 2-worker jobs one
runs while the other waits in state Queued with no pod at all, then runs. A higher-priority job
preempts a running lower-priority one, which drains, waits Queued, is admitted again and completes
with every item once and its committed items not recomputed (the ledger), at no maxRestarts cost.
Kueue's topology-aware scheduling keeps a job in one zone of a two-zone pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from e2e.support.cluster import Cluster, Manifest, conditions, wait_for
from e2e.support.fixtures import ensure_operator
from e2e.support.jobs import fault_job, item_count, job_outputs, launch, succeeded
from e2e.support.ledger import committed, recomputed
from e2e.support.pool import Pool
from e2e.support.zones import ZONE, placed_zones, split_job, zone_pool
from kubeinfer_api import naming

# One worker runs the module: its fixture runs the Kueue manager and owns the ClusterQueues.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("kueue")]
QUEUE = "e2e"
FLAVOR = "e2e-cpu"
PRIORITIES = {"e2e-low": 100, "e2e-high": 1000}
TIMEOUT = 600
FAULT_AT = 3


@pytest.fixture(scope="module")
def kueue(nodes: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Kueue running and a ClusterQueue with quota for 2 workers (the chart installs the operator of every
    e2e run with its Kueue integration on: it watches Kueue Workloads once their CRD appears)."""
    from e2e.support.local import LocalBackend
    from localcluster.kueue import KueueManager

    backend = nodes.backend
    if not isinstance(backend, LocalBackend):
        pytest.fail("these tests start the Kueue manager on the local control plane: run them on --cluster=local")
    manager = KueueManager(backend.plane, tmp_path_factory.mktemp("kueue")).start()
    try:
        nodes.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}},
                    "default")
        for name, value in PRIORITIES.items():
            nodes.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
                         "metadata": {"name": name}, "value": value}, "default")
        quota = [{"name": "cpu", "nominalQuota": "1"}, {"name": "memory", "nominalQuota": "8Gi"}]
        nodes.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": QUEUE},
                     "spec": {"namespaceSelector": {}, "preemption": {"withinClusterQueue": "LowerPriority"},
                              "resourceGroups": [{"coveredResources": ["cpu", "memory"],
                                                  "flavors": [{"name": FLAVOR, "resources": quota}]}]}}, "default")
        yield nodes
    finally:
        nodes.kubectl("delete", "clusterqueue", QUEUE, "--ignore-not-found", "--wait=false", check=False)
        manager.stop()


@pytest.fixture
def queue(kueue: Cluster, job_namespace: str) -> str:
    """The test's namespace with a LocalQueue pointing at the ClusterQueue."""
    ensure_operator(kueue)
    kueue.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": QUEUE},
                 "spec": {"clusterQueue": QUEUE}}, job_namespace)
    return job_namespace


def queued_job(name: str, namespace: str, prompts: int, priority: str | None = None) -> Manifest:
    """A 2-worker data job asking 500m per worker, sent to the LocalQueue."""
    manifest = fault_job(name, namespace, prompts=prompts, item_delay=5.0 if priority == "e2e-low" else 0)
    manifest["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": QUEUE,
                                      **({"kueue.x-k8s.io/priority-class": priority} if priority else {})}
    manifest["spec"]["workers"]["resources"] = {"requests": {"cpu": "500m", "memory": "1Gi"},
                                                "limits": {"memory": "2Gi"}}
    return manifest


def status(job: Manifest) -> Manifest:
    return dict(job.get("status") or {})


def pods(cluster: Cluster, namespace: str, job: str) -> list[Manifest]:
    return cluster.items("pods", namespace, f"{naming.JOB_LABEL}={job}")


def workload(cluster: Cluster, namespace: str, job: str) -> Manifest:
    found = cluster.get("workloads.kueue.x-k8s.io", naming.kueue_workload(job), namespace)
    assert found is not None, f"no Kueue Workload for {job}"
    return found


def wl_condition(wl: Manifest, kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in wl.get("status", {}).get("conditions", []))


def test_quota_for_one_job_admits_them_one_after_the_other(queue: str, kueue: Cluster, tiny_models: Any) -> None:
    first, second = queued_job("alpha", queue, prompts=4), queued_job("beta", queue, prompts=4)
    launch(kueue, queue, first)
    kueue.wait_job("alpha", queue, lambda j: status(j).get("state") in ("Running", "Complete"), "alpha runs", 180)
    launch(kueue, queue, second)
    job = kueue.wait_job("beta", queue, lambda j: status(j).get("state") == "Queued" and "quota" in (
        status(j).get("message") or ""), "beta Queued for quota", 60)
    assert not pods(kueue, queue, "beta"), "a queued job has no pods"
    assert "insufficient unused quota" in conditions(job)["Queued"]["message"], job["status"]["message"]
    alpha = kueue.wait_condition("alpha", queue, "Complete", TIMEOUT)
    # The operator marks the Workload Finished in the same pass that writes Complete, just after it.
    wait_for(lambda: wl_condition(workload(kueue, queue, "alpha"), "Finished"), "alpha's quota released", 30)
    beta = kueue.wait_condition("beta", queue, "Complete", TIMEOUT)
    for manifest, done in ((first, alpha), (second, beta)):
        assert len(job_outputs(kueue, queue, manifest["metadata"]["name"]).items) == item_count(manifest)
        assert status(done).get("restarts", 0) == 0


def test_higher_priority_preempts_and_the_preempted_job_resumes_from_its_ledger(
    queue: str, kueue: Cluster, tiny_models: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    low = queued_job("low", queue, prompts=12, priority="e2e-low")
    low["spec"]["failurePolicy"]["maxRestarts"] = 0  # a preemption must not need a restart
    launch(kueue, queue, low)
    kueue.wait_job("low", queue, lambda j: succeeded(j) >= FAULT_AT, f"low: {FAULT_AT} items committed", TIMEOUT)
    before = committed(kueue, low, monkeypatch)
    high = queued_job("high", queue, prompts=2, priority="e2e-high")
    launch(kueue, queue, high)
    kueue.wait_job("low", queue, lambda j: conditions(j).get("Queued", {}).get("reason") == "Preempted" and (
        status(j).get("state") == "Queued"), "low Queued, reason Preempted", 120)
    kueue.wait_condition("high", queue, "Complete", TIMEOUT)
    job = kueue.wait_condition("low", queue, "Complete", TIMEOUT)
    assert job["status"].get("restarts", 0) == 0 and job["status"]["attempt"] >= 1
    run = job_outputs(kueue, queue, "low")
    assert len(run.items) == item_count(low)
    redone = recomputed(before, run.entries)
    assert not redone, f"items committed before the preemption were computed again: {redone}"
    wait_for(lambda: not pods(kueue, queue, "low"), "low's workers gone", 120)


@pytest.fixture
def tas_pool(kueue: Cluster, job_namespace: str) -> Iterator[Pool]:
    """Kueue topology-aware scheduling over two zones: a Topology (zone, then host), a flavor of the zone
    pool's nodes, a ClusterQueue on it and a LocalQueue in the test's namespace."""
    ensure_operator(kueue)
    with zone_pool(kueue, "e2e-tas") as pool:
        toleration = {"key": pool.label[0], "operator": "Equal", "value": pool.label[1], "effect": "NoSchedule"}
        kueue.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Topology", "metadata": {"name": "zones"},
                     "spec": {"levels": [{"nodeLabel": ZONE}, {"nodeLabel": "kubernetes.io/hostname"}]}}, "default")
        kueue.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "zones"},
                     "spec": {"nodeLabels": dict([pool.label]), "topologyName": "zones",
                              "tolerations": [toleration]}}, "default")
        quota = [{"name": "cpu", "nominalQuota": "8"}, {"name": "memory", "nominalQuota": "16Gi"}]
        kueue.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": "zones"},
                     "spec": {"namespaceSelector": {}, "resourceGroups": [
                         {"coveredResources": ["cpu", "memory"], "flavors": [{"name": "zones", "resources": quota}]}]}},
                    "default")
        kueue.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "zones"},
                     "spec": {"clusterQueue": "zones"}}, job_namespace)
        pool.wait_empty()
        try:
            yield pool
        finally:
            kueue.kubectl("delete", "clusterqueue", "zones", "--ignore-not-found", "--wait=false", check=False)


def test_kueue_topology_request_keeps_the_job_in_one_zone(kueue: Cluster, tas_pool: Pool, job_namespace: str,
                                                          tiny_models: Any) -> None:
    ns = job_namespace
    manifest = split_job(tas_pool, "tas", ns, topology=True)
    manifest["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "zones"}
    name = launch(kueue, ns, manifest)
    placed = placed_zones(tas_pool, ns, name, 2)
    assert len(set(placed)) == 1, f"workers in several zones: {placed}"
    admission = workload(kueue, ns, name)["status"]["admission"]["podSetAssignments"][0]
    assert admission.get("topologyAssignment"), "Kueue admitted without a topology assignment"
    kueue.wait_condition(name, ns, "Complete", TIMEOUT)
    assert len(job_outputs(kueue, ns, name).items) == item_count(manifest)
