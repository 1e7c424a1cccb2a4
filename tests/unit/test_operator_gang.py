"""Gang scheduling: the PodGroup per attempt, the pods that join it, and what the job says about it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from unit.builders import JobBuilder, PodBuilder, gang

from kubeinfer_api.status import DistributedInferenceStatus
from kubeinfer_operator import conditions
from kubeinfer_operator.builders import build_pod_group, build_statefulset
from kubeinfer_operator.decide import Cluster, Decision, decide
from kubeinfer_operator.discovery import PODGROUPS, Discovery
from kubeinfer_operator.kube import ApiError
from kubeinfer_operator.observe import observe

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GANG_MESSAGE = ("pod group is unschedulable, pod group is unschedulable, 0/1 placements are available, first "
                "placement status: minCount (3) cannot be satisfied: 2 scheduled, 0 remaining")


def step(job: JobBuilder, status: DistributedInferenceStatus, pods: list[PodBuilder], served: bool) -> Decision:
    obs = observe([p.obj() for p in pods], status.attempt, {"node-1": True}, None,
                  {"metadata": {"name": "cats-workers"}})
    return decide(job.spec(), status, obs, T0, 1, Cluster(gang=served))


def test_pod_group_asks_for_every_worker_at_once() -> None:
    job = JobBuilder().nodes(3).set("workers.priorityClassName", "batch-high")
    group = build_pod_group(job.ref(), job.spec(), attempt=2)
    assert (group["apiVersion"], group["kind"]) == ("scheduling.k8s.io/v1beta1", "PodGroup")
    assert group["metadata"]["name"] == "cats-gang-2"
    assert group["metadata"]["ownerReferences"][0]["uid"] == "uid-cats"
    assert group["spec"]["schedulingPolicy"] == {"gang": {"minCount": 3}}
    assert group["spec"]["priorityClassName"] == "batch-high"
    assert "schedulingConstraints" not in group["spec"]


def test_topology_key_goes_into_the_pod_group_and_the_pod_affinity() -> None:
    user = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    job = JobBuilder().nodes(2).set("scheduling.topologyKey", "topology.kubernetes.io/zone").set(
        "workers.affinity", user)
    group = build_pod_group(job.ref(), job.spec(), attempt=0)
    assert group["spec"]["schedulingConstraints"] == {"topology": [{"key": "topology.kubernetes.io/zone"}]}
    affinity = build_statefulset(job.ref(), job.spec(), "img", 0)["spec"]["template"]["spec"]["affinity"]
    assert affinity["nodeAffinity"] == user["nodeAffinity"], "the user's affinity is kept"
    [term] = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "topology.kubernetes.io/zone"
    assert term["labelSelector"]["matchLabels"] == {"kubeinfer.io/job-name": "cats", "kubeinfer.io/component": "worker"}
    assert job.spec().workers.affinity == user, "the spec is not changed in place"


def test_workers_name_the_attempts_pod_group_only_when_given() -> None:
    job = JobBuilder().nodes(2)
    with_group: Any = build_statefulset(job.ref(), job.spec(), "img", 1, "cats-gang-1")["spec"]["template"]["spec"]
    without: Any = build_statefulset(job.ref(), job.spec(), "img", 1)["spec"]["template"]["spec"]
    assert with_group["schedulingGroup"] == {"podGroupName": "cats-gang-1"}
    assert "schedulingGroup" not in without and "affinity" not in without


def test_served_api_means_a_gang_and_a_condition_that_says_so() -> None:
    d = step(JobBuilder().nodes(3), DistributedInferenceStatus(), [], served=True)
    assert d.workers and d.gang
    cond = conditions.get(d.status, "GangScheduling")
    assert cond is not None and cond.status == "True" and cond.reason == "PodGroupCreated"
    assert "minCount 3" in cond.message


def test_missing_api_falls_back_and_says_it_once() -> None:
    job = JobBuilder().nodes(2)
    first = step(job, DistributedInferenceStatus(), [], served=False)
    assert first.workers and not first.gang
    cond = conditions.get(first.status, "GangScheduling")
    assert cond is not None and cond.status == "False" and cond.reason == "GangSchedulingUnavailable"
    assert "GenericWorkload" in cond.message and "one by one" in cond.message
    assert [e.reason for e in first.events].count("GangSchedulingUnavailable") == 1
    second = step(job, first.status, [p.running() for p in gang("cats", 2)], served=False)
    assert "GangSchedulingUnavailable" not in [e.reason for e in second.events]
    assert second.status.state == "Running"


def test_required_gang_on_a_cluster_without_the_api_fails_without_workers() -> None:
    d = step(JobBuilder().set("scheduling.gang", "Required"), DistributedInferenceStatus(), [], served=False)
    assert not d.workers and d.status.state == "Failed"
    failed = conditions.get(d.status, "Failed")
    assert failed is not None and failed.reason == "GangSchedulingRequired" and "Required" in failed.message


def test_disabled_gang_creates_no_pod_group_and_no_condition() -> None:
    d = step(JobBuilder().set("scheduling.gang", "Disabled"), DistributedInferenceStatus(), [], served=True)
    assert d.workers and not d.gang and conditions.get(d.status, "GangScheduling") is None


def test_an_unplaceable_gang_shows_state_unschedulable_with_the_schedulers_reason() -> None:
    pods = [PodBuilder("cats", i).unschedulable(GANG_MESSAGE) for i in range(2)]
    pods.append(PodBuilder("cats", 2).unschedulable("0/2 nodes are available: 2 Insufficient cpu."))
    d = step(JobBuilder().nodes(3), DistributedInferenceStatus(), pods, served=True)
    assert d.status.state == "Unschedulable"
    running = conditions.get(d.status, "Running")
    assert running is not None and running.reason == "Unschedulable"
    assert running.message.startswith("0 of 3 workers placed (attempt 0); the scheduler: cats-workers-0: pod group")
    assert "pod group is unschedulable, pod group" not in running.message, "the repeated prefix is cut"
    assert d.status.message is not None and "minCount (3) cannot be satisfied" in d.status.message


def test_an_elastic_job_with_min_nodes_asks_for_that_many_and_runs_on_them() -> None:
    """workers.minNodes 2 of 3: the PodGroup's minCount is 2, and 2 running workers make the job Running
    while the third waits for room, the scheduler's reason in the message."""
    job = JobBuilder().nodes(3).set("strategy.elastic", True).set("workers.minNodes", 2)
    assert build_pod_group(job.ref(), job.spec(), attempt=0)["spec"]["schedulingPolicy"] == {"gang": {"minCount": 2}}
    pods = [PodBuilder("cats", 0).running(), PodBuilder("cats", 1).running(),
            PodBuilder("cats", 2).unschedulable("0/3 nodes are available: 3 Insufficient cpu.")]
    d = step(job, DistributedInferenceStatus(), pods, served=True)
    running = conditions.get(d.status, "Running")
    assert d.status.state == "Running" and running is not None and running.status == "True"
    assert running.message == ("2 of 3 workers running (attempt 0, minNodes 2); the others join as capacity "
                               "appears; the scheduler: cats-workers-2: 0/3 nodes are available: 3 Insufficient cpu.")
    one = step(job, DistributedInferenceStatus(), pods[:1] + [PodBuilder("cats", i).unschedulable("full")
                                                               for i in (1, 2)], served=True)
    assert one.status.state == "Unschedulable", "fewer than minNodes running: not Running"


def test_state_message_is_one_short_line() -> None:
    pods = [PodBuilder("cats", 0).unschedulable("x " * 400)]
    d = step(JobBuilder().nodes(1), DistributedInferenceStatus(), pods, served=False)
    assert d.status.message is not None and len(d.status.message) <= conditions.SUMMARY_LIMIT
    assert d.status.message.endswith("...") and "\n" not in d.status.message


class FakeKube:
    """Answers discovery GETs from a table (the one request Discovery makes) and counts them."""

    def __init__(self, served: dict[str, list[str]]) -> None:
        self.served, self.calls = served, 0

    def request(self, method: str, url: str, **_: Any) -> dict[str, Any]:
        self.calls += 1
        group_version = url.removeprefix("/apis/")
        if group_version not in self.served:
            raise ApiError(404, "not found")
        return {"resources": [{"name": n} for n in self.served[group_version]]}


@pytest.mark.parametrize(("served", "expected"), [
    ({"scheduling.k8s.io/v1beta1": ["podgroups", "workloads"]}, True),
    ({"scheduling.k8s.io/v1beta1": ["workloads"]}, False),
    ({}, False),
])
def test_discovery_answers_from_the_server_once_per_ttl(served: dict[str, list[str]], expected: bool) -> None:
    kube = FakeKube(served)
    discovery = Discovery(kube, ttl=60)  # type: ignore[arg-type]
    assert [discovery.serves(PODGROUPS) for _ in range(3)] == [expected] * 3
    assert kube.calls == 1
    discovery.ttl = 0
    assert discovery.serves(PODGROUPS) is expected and kube.calls == 2
