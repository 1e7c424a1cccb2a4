"""Kueue: the Workload the operator manages, and what admission, eviction and completion do to the job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from unit.builders import JobBuilder, PodBuilder, gang

from kubeinfer_api.progress import Progress, encode
from kubeinfer_api.status import DistributedInferenceStatus
from kubeinfer_operator import conditions, kueue
from kubeinfer_operator.builders import build_statefulset, build_workload
from kubeinfer_operator.decide import Decision, decide
from kubeinfer_operator.kueue import Assignment, Sync
from kubeinfer_operator.observe import observe

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Obj = dict[str, Any]
PENDING = "couldn't assign flavors to pod set workers: insufficient unused quota for cpu in flavor cpu, 2 more needed"


def workload(*conds: tuple[str, str, str, str], admission: Obj | None = None, active: bool = True) -> Obj:
    return {"metadata": {"name": "cats-kueue", "resourceVersion": "42", "generation": 1},
            "spec": {"active": active},
            "status": {"conditions": [{"type": t, "status": s, "reason": r, "message": m,
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"} for t, s, r, m in conds],
                       **({"admission": admission} if admission else {})}}


ADMISSION = {"clusterQueue": "team", "podSetAssignments": [{"name": "workers", "flavors": {"cpu": "cpu"}, "count": 2}]}
PENDING_WL = workload(("QuotaReserved", "False", "Pending", PENDING))
ADMITTED_WL = workload(("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue team"),
                       ("Admitted", "True", "Admitted", "The workload is admitted"), admission=ADMISSION)
EVICTED_WL = workload(("QuotaReserved", "True", "QuotaReserved", ""), ("Admitted", "False", "NoReservation", ""),
                      ("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: 1) due to "
                       "prioritization in the ClusterQueue"), admission=ADMISSION)


def step(job: JobBuilder, status: DistributedInferenceStatus, pods: list[PodBuilder], wl: Obj | None,
         progress: Progress | None = None, enabled: bool = True, sts: bool = True) -> Decision:
    obs = observe([p.obj() for p in pods], status.attempt, {"node-1": True}, encode(progress) if progress else None,
                  {"metadata": {"name": "cats-workers"}} if sts else None)
    return decide(job.spec(), status, obs, T0, 1, queue=kueue.view(wl, enabled))


def test_a_queued_job_creates_its_workload_and_no_workers() -> None:
    d = step(JobBuilder().nodes(2), DistributedInferenceStatus(), [], None, sts=False)
    assert not d.workers and d.kueue == Sync(create=True)
    assert d.status.state == "Queued" and "Workload is being created" in (d.status.message or "")
    pending = step(JobBuilder().nodes(2), d.status, [], PENDING_WL, sts=False)
    assert not pending.workers and not pending.kueue
    queued = conditions.get(pending.status, "Queued")
    assert queued is not None and queued.reason == "WaitingForAdmission" and PENDING in queued.message


def test_admission_starts_the_workers_and_reports_pods_ready() -> None:
    job = JobBuilder().nodes(2)
    d = step(job, DistributedInferenceStatus(), [], ADMITTED_WL)
    assert d.workers and d.status.attempt == 0
    queued = conditions.get(d.status, "Queued")
    assert queued is not None and queued.status == "False" and "ClusterQueue team" in queued.message
    assert d.kueue == Sync(pods_ready=False)
    running = step(job, d.status, [p.running() for p in gang("cats", 2)], ADMITTED_WL)
    assert running.status.state == "Running" and running.kueue == Sync(pods_ready=True)


def test_eviction_stops_the_workers_then_hands_the_quota_back_without_a_restart() -> None:
    job = JobBuilder().nodes(2).max_restarts(0)
    admitted = step(job, DistributedInferenceStatus(), [p.running() for p in gang("cats", 2)], ADMITTED_WL).status
    evicted = step(job, admitted, [p.running() for p in gang("cats", 2)], EVICTED_WL)
    assert not evicted.workers and evicted.status.state == "Queued" and evicted.status.attempt == 1
    assert evicted.status.restarts == 0 and conditions.get(evicted.status, "Queued").reason == "Preempted"  # type: ignore[union-attr]
    assert not evicted.kueue, "quota is handed back only once the workers are gone"
    draining = step(job, evicted.status, [p.running().deleted() for p in gang("cats", 2)], EVICTED_WL)
    assert not draining.kueue and draining.status.attempt == 1 and draining.status.state == "Queued"
    gone = step(job, draining.status, [], EVICTED_WL, sts=False)
    assert gone.kueue.release is not None and gone.kueue.release[0] == "Preempted"
    readmitted = step(job, gone.status, [], ADMITTED_WL, sts=False)
    assert readmitted.workers and readmitted.status.attempt == 1 and readmitted.status.restarts == 0


def test_release_patch_clears_the_admission_and_requeues() -> None:
    patch = kueue.status_patch(EVICTED_WL, Sync(release=("Preempted", "by a higher priority")), "2026-01-01T01:00:00Z")
    assert patch is not None and patch["metadata"] == {"resourceVersion": "42"}
    assert patch["status"]["admission"] is None
    by_type = {c["type"]: c for c in patch["status"]["conditions"]}
    assert by_type["QuotaReserved"]["status"] == "False" and by_type["Admitted"]["status"] == "False"
    assert by_type["Requeued"]["status"] == "True" and by_type["Evicted"]["status"] == "True"
    assert by_type["QuotaReserved"]["lastTransitionTime"] == "2026-01-01T01:00:00Z"
    assert kueue.status_patch(ADMITTED_WL, Sync(), "2026-01-01T01:00:00Z") is None


def test_completion_marks_the_workload_finished_once() -> None:
    job = JobBuilder().nodes(2)
    status = step(job, DistributedInferenceStatus(), [p.running() for p in gang("cats", 2)], ADMITTED_WL).status
    report = Progress(attempt=0, phase="complete", total=2, succeeded=2)  # type: ignore[arg-type]
    done = step(job, status, [p.running() for p in gang("cats", 2)], ADMITTED_WL, report)
    assert done.status.state == "Complete" and done.kueue.finish is not None and done.kueue.finish[0] == "Succeeded"
    patch = kueue.status_patch(ADMITTED_WL, done.kueue, "t")
    assert patch is not None
    assert {"type": "Finished", "status": "True"}.items() <= patch["status"]["conditions"][-1].items()
    finished_wl = workload(("Finished", "True", "Succeeded", ""))
    assert not step(job, done.status, [], finished_wl, report, sts=False).kueue


def test_suspend_deactivates_the_workload() -> None:
    d = step(JobBuilder().suspend(), DistributedInferenceStatus(), [], ADMITTED_WL)
    assert d.status.state == "Suspended" and d.kueue.active is False


def test_a_queue_label_without_the_integration_waits_and_says_why() -> None:
    d = step(JobBuilder(), DistributedInferenceStatus(), [], None, enabled=False, sts=False)
    assert not d.workers and not d.kueue and d.status.state == "Queued"
    assert "kueue.enabled=true" in (d.status.message or "")


def test_workload_asks_for_every_worker_with_its_pod_template() -> None:
    job = JobBuilder().nodes(3).set("workers.resources", {"requests": {"cpu": "2"}}).set(
        "scheduling.topologyKey", "topology.kubernetes.io/zone")
    ref = {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass", "name": "high"}
    wl = build_workload(job.ref(), job.spec(), "img", "team-queue", (ref, 1000))
    assert (wl["apiVersion"], wl["kind"]) == ("kueue.x-k8s.io/v1beta2", "Workload")
    assert wl["metadata"]["name"] == "cats-kueue"
    assert wl["metadata"]["ownerReferences"][0]["kind"] == "DistributedInference"
    assert wl["metadata"]["labels"]["kueue.x-k8s.io/job-uid"] == "uid-cats"
    [pod_set] = wl["spec"]["podSets"]
    assert pod_set["name"] == "workers" and pod_set["count"] == 3
    requests = pod_set["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests == {"cpu": "2", "memory": "1Gi"}, "the default memory request counts against the quota"
    assert pod_set["topologyRequest"] == {"required": "topology.kubernetes.io/zone"}
    assert wl["spec"]["queueName"] == "team-queue" and wl["spec"]["active"] is True
    assert (wl["spec"]["priorityClassRef"], wl["spec"]["priority"]) == (ref, 1000)


def test_admitted_pods_get_the_flavor_and_kueues_topology_gate() -> None:
    job = JobBuilder().nodes(2).set("workers.nodeSelector", {"disk": "ssd"}).set(
        "workers.tolerations", [{"key": "a", "operator": "Exists"}]).set("scheduling.topologyKey", "rack")
    admitted = Assignment(cluster_queue="team", node_selector={"pool": "gpu"},
                          tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                          topology=True, workload="cats-kueue")
    template = build_statefulset(job.ref(), job.spec(), "img", 0, "cats-gang-0", admitted)["spec"]["template"]
    pod, meta = template["spec"], template["metadata"]
    assert pod["nodeSelector"] == {"disk": "ssd", "pool": "gpu"}
    assert [t["key"] for t in pod["tolerations"]] == ["a", "gpu"]
    assert pod["schedulingGates"] == [{"name": "kueue.x-k8s.io/topology"}]
    assert meta["annotations"]["kueue.x-k8s.io/workload"] == "cats-kueue"
    assert meta["annotations"]["kueue.x-k8s.io/podset-required-topology"] == "rack"
    assert meta["labels"]["kueue.x-k8s.io/podset"] == "workers"
    assert pod["schedulingGroup"] == {"podGroupName": "cats-gang-0"}
    plain = build_statefulset(job.ref(), job.spec(), "img", 0)["spec"]["template"]
    assert "schedulingGates" not in plain["spec"] and "kueue.x-k8s.io/podset" not in plain["metadata"]["labels"]


def test_the_queued_message_names_the_local_queues_counts() -> None:
    obs = observe([], 0, {}, None, None)
    counts = "LocalQueue team: 3 pending, 1 admitted"
    queue = kueue.view(PENDING_WL, True, counts)
    d = decide(JobBuilder().spec(), DistributedInferenceStatus(), obs, T0, 1, queue=queue)
    assert d.status.message is not None and PENDING in d.status.message and counts in d.status.message
