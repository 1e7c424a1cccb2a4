"""Gang scheduling on the real kube-scheduler: a job's workers are bound all together or not at all.

A pool of three 2-CPU nodes, tainted so no other test lands there, holds one worker (2 CPUs) each;
cordoning a node takes its room away and uncordoning gives it back ("capacity appears"). The
two-job test runs twice: with gang scheduling each job is either wholly placed or wholly pending, and
both complete; without it the same steps end in the classic deadlock (each job holds one of its two
workers and waits for the other), which only deleting a job resolves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.support.cluster import Cluster, Manifest, wait_for
from e2e.support.jobs import fault_job, item_count, job_outputs, launch
from e2e.support.pool import Pool, node_pool
from kubeinfer_api import naming

# One worker runs the module: its fixture starts the pool nodes the tests cordon and fill.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("gang")]
ROLES = ["gang-1", "gang-2", "gang-3"]
POOL_LABEL = ("kubeinfer-e2e/pool", "gang")
TIMEOUT = 600


@pytest.fixture(scope="module")
def pool(nodes: Cluster) -> Iterator[Pool]:
    """Three 2-CPU nodes only pool jobs tolerate; removed afterwards."""
    with node_pool(nodes, {role: {} for role in ROLES}, POOL_LABEL, cpu="2") as started:
        yield started


@pytest.fixture
def all_room(pool: Pool, operator: Cluster) -> Iterator[Pool]:
    """The pool (and the operator) for one test: empty at its start, every node schedulable and unreserved
    at its end."""
    pool.wait_empty()
    yield pool
    pool.release(*pool.nodes)
    pool.uncordon(*pool.nodes)


def pool_job(pool: Pool, name: str, namespace: str, nodes: int, gang: str = "Auto") -> Manifest:
    """A small data-parallel job whose every worker needs a whole pool node (2 CPUs)."""
    manifest = pool.admit(fault_job(name, namespace, prompts=2 * nodes, steps=2, nodes=nodes, item_delay=0))
    spec = manifest["spec"]
    workers = spec["workers"]
    workers["resources"] = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    spec["scheduling"] = {"gang": gang}
    spec["rendezvous"] = {"timeoutSeconds": 300}
    return manifest


def pods(cluster: Cluster, namespace: str, job: str) -> list[Manifest]:
    return cluster.items("pods", namespace, f"{naming.JOB_LABEL}={job}")


def bound(cluster: Cluster, namespace: str, job: str) -> int:
    return sum(1 for p in pods(cluster, namespace, job) if p["spec"].get("nodeName"))


def unschedulable(cluster: Cluster, namespace: str, job: str, count: int) -> bool:
    """`count` pods of the job exist and the scheduler has marked every unbound one Unschedulable."""
    found = pods(cluster, namespace, job)
    waiting = [p for p in found if not p["spec"].get("nodeName")]
    return len(found) == count and bool(waiting) and all(
        any(c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
            for c in p.get("status", {}).get("conditions") or []) for p in waiting)


def state(cluster: Cluster, namespace: str, job: str) -> str:
    return str((cluster.job(job, namespace).get("status") or {}).get("state"))


def assert_every_item_once(cluster: Cluster, namespace: str, manifest: Manifest) -> None:
    run = job_outputs(cluster, namespace, manifest["metadata"]["name"])
    assert len(run.items) == item_count(manifest)


def test_gang_binds_no_worker_until_all_fit(all_room: Pool, job_namespace: str, tiny_models: Any) -> None:
    cluster, ns = all_room.cluster, job_namespace
    all_room.cordon(all_room.nodes[2])  # room for 2 workers
    manifest = pool_job(all_room, "three", ns, nodes=3)
    name = launch(cluster, ns, manifest)
    job = cluster.wait_job(name, ns, lambda j: (j.get("status") or {}).get("state") == "Unschedulable",
                           "state Unschedulable", 120)
    assert "minCount (3) cannot be satisfied" in job["status"]["message"], job["status"]["message"]
    assert unschedulable(cluster, ns, name, 3) and bound(cluster, ns, name) == 0, "a partial gang was bound"
    header, row = cluster.kubectl("get", "dinf", name, "-n", ns).stdout.splitlines()[:2]
    shown = dict(zip(header.split(), row.split(None, len(header.split()) - 1), strict=True))
    assert shown["STATE"] == "Unschedulable" and "cannot be satisfied" in shown["MESSAGE"], shown

    all_room.uncordon(all_room.nodes[2])  # capacity appears: the whole gang is placed at once
    wait_for(lambda: bound(cluster, ns, name) == 3, "all 3 workers bound", 120)
    cluster.wait_condition(name, ns, "Complete", TIMEOUT)
    assert_every_item_once(cluster, ns, manifest)


@pytest.mark.parametrize("gang", ["Auto", "Disabled"])
def test_two_jobs_that_fit_alone_but_not_together(all_room: Pool, job_namespace: str, tiny_models: Any,
                                                  gang: str) -> None:
    """Room for one worker, then two; job A asks first, job B next, and the second place is freed for B.

    Reserving it for B (a taint only B tolerates) fixes the one interleaving that, without gang
    scheduling, deadlocks; left to the scheduler, whether A's or B's waiting worker takes a freed place
    depends on each pod's retry backoff at that moment (A's then runs, and no deadlock is shown)."""
    cluster, ns = all_room.cluster, job_namespace
    all_room.cordon(*all_room.nodes[1:])
    first = pool_job(all_room, "first", ns, nodes=2, gang=gang)
    second = pool_job(all_room, "second", ns, nodes=2, gang=gang)
    launch(cluster, ns, first)
    placed = 0 if gang == "Auto" else 1  # a gang waits whole; one by one, the first worker takes the place
    wait_for(lambda: unschedulable(cluster, ns, "first", 2) and bound(cluster, ns, "first") == placed,
             f"first: {placed} of 2 workers bound, the rest marked unschedulable", 120)
    all_room.reserve(all_room.nodes[1], second)
    launch(cluster, ns, second)
    wait_for(lambda: unschedulable(cluster, ns, "second", 2), "second's workers marked unschedulable", 120)

    all_room.uncordon(all_room.nodes[1])  # room for two workers: one job fits, not both
    if gang == "Auto":
        # B's gang is placed whole on both places; A's, with one place it may use, binds nothing meanwhile.
        wait_for(lambda: bound(cluster, ns, "second") == 2, "second's gang placed whole", 120)
        assert bound(cluster, ns, "first") == 0, "first's gang partly bound"
        cluster.wait_condition("second", ns, "Complete", TIMEOUT)
        all_room.release(all_room.nodes[1])
        cluster.wait_condition("first", ns, "Complete", TIMEOUT)
        for manifest in (first, second):
            assert_every_item_once(cluster, ns, manifest)
        return
    # One by one, each job gets one of the two places: both wait forever for their second worker.
    wait_for(lambda: bound(cluster, ns, "second") == 1, "the freed place taken by one of second's workers", 120)
    wait_for(lambda: unschedulable(cluster, ns, "second", 2), "second's other worker rejected", 60)
    assert bound(cluster, ns, "first") == 1, "deadlock expected: each job holds one of its two workers"
    for job in ("first", "second"):  # the operator's status follows the pods a moment later
        wait_for(lambda job=job: state(cluster, ns, job) == "Unschedulable", f"{job} shown Unschedulable", 60)
        assert bound(cluster, ns, job) == 1, json.dumps(cluster.job(job, ns)["status"])
    cluster.kubectl("delete", "dinf", "second", "-n", ns, "--wait=false")  # the only way out
    all_room.release(all_room.nodes[1])
    cluster.wait_condition("first", ns, "Complete", TIMEOUT)
    assert_every_item_once(cluster, ns, first)


def test_an_elastic_job_with_min_nodes_runs_on_the_room_there_is(all_room: Pool, job_namespace: str,
                                                                 tiny_models: Any) -> None:
    """strategy.elastic with workers.minNodes 2 of 3, on room for 2: the gang of 2 is bound and the job runs
    and completes on those two, every item once, while the third worker waits for capacity."""
    cluster, ns = all_room.cluster, job_namespace
    all_room.cordon(all_room.nodes[2])  # room for 2 workers
    manifest = pool_job(all_room, "elastic", ns, nodes=3)
    manifest["spec"].setdefault("strategy", {})["elastic"] = True
    manifest["spec"]["workers"]["minNodes"] = 2
    name = launch(cluster, ns, manifest)
    job = cluster.wait_job(name, ns, lambda j: (j.get("status") or {}).get("state") == "Running", "state Running",
                           TIMEOUT)
    assert "of 3 workers running (attempt 0, minNodes 2); the others join as capacity appears" in \
        job["status"]["message"], job["status"]["message"]
    assert len(pods(cluster, ns, name)) == 3 and bound(cluster, ns, name) == 2, "two placed, one waiting for room"
    cluster.wait_condition(name, ns, "Complete", TIMEOUT)
    assert_every_item_once(cluster, ns, manifest)
