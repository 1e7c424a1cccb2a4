"""Kueue admission of a job labelled kueue.x-k8s.io/queue-name: the jobframework protocol, in Python. Pure.

The operator manages the job's one `kueue.x-k8s.io/v1beta2` Workload itself, as Kueue's own job
integrations do (its GenericJob reconciler): one pod set of `workers.nodes` pods with the workers' pod
template, so Kueue admits or evicts the whole job at once. No workers exist until Kueue admits the
Workload (state Queued, with Kueue's reason); admitted, they start with the flavors' node labels and
tolerations (and Kueue's topology gate when it assigned a topology); evicted or preempted, they are
stopped (SIGTERM: the workers drain), and once none is left the quota is handed back (admission
cleared, Requeued) so Kueue can admit the job again later, from its ledger, at no maxRestarts cost.
A finished job marks its Workload Finished, which releases the quota.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubeinfer_api.status import DistributedInferenceStatus, Reason
from kubeinfer_operator import conditions
from kubeinfer_operator.observe import Observation

Obj = dict[str, Any]
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
API_VERSION = "kueue.x-k8s.io/v1beta2"
PODSET = "workers"
PODSET_LABEL = "kueue.x-k8s.io/podset"
WORKLOAD_ANNOTATION = "kueue.x-k8s.io/workload"
TOPOLOGY_GATE = "kueue.x-k8s.io/topology"
REQUIRED_TOPOLOGY_ANNOTATION = "kueue.x-k8s.io/podset-required-topology"
#: Kueue's eviction reasons after which Kueue requeues the Workload at once (jobframework's rule).
REQUEUE_REASONS = frozenset({"Preempted", "NodeFailures"})
DISABLED = ("the job names a Kueue LocalQueue (label kueue.x-k8s.io/queue-name) but the operator's Kueue "
            "integration is off: install the chart with --set kueue.enabled=true")


@dataclass(frozen=True)
class Assignment:
    """What an admission adds to the workers' pods (Kueue's podset.PodSetInfo)."""

    cluster_queue: str
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[Obj] = field(default_factory=list)
    topology: bool = False  # a topology assignment: Kueue's ungater places each pod
    workload: str = ""


@dataclass(frozen=True)
class KueueView:
    """The job's Workload as last seen (or that it has none yet)."""

    enabled: bool = True  # the operator's Kueue integration is on
    exists: bool = False
    active: bool = True
    admitted: bool = False
    quota_reserved: bool = False
    finished: bool = False
    evicted: tuple[str, str] | None = None  # (reason, message) while Evicted is True
    pending: str = ""  # Kueue's reason for not admitting yet (QuotaReserved False)
    pods_ready: bool | None = None
    cluster_queue: str = ""
    admission: Obj | None = None
    queue: str = ""  # the LocalQueue's counts, e.g. "LocalQueue team-a: 3 pending, 1 admitted"


def cond(workload: Obj, kind: str) -> Obj | None:
    return next((c for c in (workload.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def is_true(workload: Obj, kind: str) -> bool:
    return (cond(workload, kind) or {}).get("status") == "True"


def view(workload: Obj | None, enabled: bool = True, queue: str = "") -> KueueView:
    """`queue`: what the LocalQueue says (Kueue serves no queue position without its visibility API)."""
    if not enabled:
        return KueueView(enabled=False)
    if workload is None:
        return KueueView(queue=queue)
    evicted = cond(workload, "Evicted")
    reserved = cond(workload, "QuotaReserved") or {}
    ready = cond(workload, "PodsReady")
    admission = (workload.get("status") or {}).get("admission")
    return KueueView(
        exists=True, active=(workload.get("spec") or {}).get("active", True) is not False,
        admitted=is_true(workload, "Admitted"), quota_reserved=reserved.get("status") == "True",
        finished=is_true(workload, "Finished"),
        evicted=(str(evicted.get("reason")), str(evicted.get("message") or "")) if evicted and evicted.get(
            "status") == "True" else None,
        pending=str(reserved.get("message") or "") if reserved.get("status") != "True" else "",
        pods_ready=None if ready is None else ready.get("status") == "True",
        cluster_queue=str((admission or {}).get("clusterQueue") or ""), admission=admission, queue=queue)


def hold(status: DistributedInferenceStatus, kv: KueueView, now: datetime, generation: int | None) -> bool:
    """True while the workers must not run (not admitted, or evicted); sets the Queued condition.

    Stopping admitted workers starts a new attempt (pods still terminating then are stale, not failed)."""
    if kv.enabled and kv.admitted and kv.evicted is None:
        conditions.set_condition(status, "Queued", False, Reason.ADMITTED,
                                 f"admitted by ClusterQueue {kv.cluster_queue}", now, generation)
        return False
    message = queued_message(kv)
    was_admitted = (old := conditions.get(status, "Queued")) is not None and old.status == "False"
    if was_admitted:
        status.attempt += 1
    if kv.evicted is None:
        conditions.set_condition(status, "Queued", True, Reason.WAITING_FOR_ADMISSION, message, now, generation)
    elif kv.evicted[0] == "Preempted":
        conditions.set_condition(status, "Queued", True, Reason.PREEMPTED, message, now, generation)
    else:  # Kueue's own reason: InactiveWorkload, PodsReadyTimeout, AdmissionCheck, ClusterQueueStopped, ...
        conditions.set_condition(status, "Queued", True, kv.evicted[0], message, now, generation)
    queued = conditions.get(status, "Queued")
    assert queued is not None
    conditions.clear(status, "Running", queued.reason, message, now, generation)
    conditions.clear(status, "Restarting", queued.reason, message, now, generation)
    return True


def queued_message(kv: KueueView) -> str:
    if not kv.enabled:
        return DISABLED
    if kv.evicted is not None:
        return (f"evicted by Kueue ({kv.evicted[0]}: {kv.evicted[1]}); the workers drain and the job waits to be "
                "admitted again, resuming from its ledger")
    where = f" ({kv.queue})" if kv.queue else ""
    if not kv.exists:
        return f"waiting for Kueue: its Workload is being created{where}"
    return f"waiting for Kueue: {kv.pending or 'not admitted yet'}{where}"


@dataclass(frozen=True)
class Sync:
    """What the Workload must be told this pass (the reconciler patches its spec and status)."""

    create: bool = False
    active: bool | None = None  # spec.active to set
    release: tuple[str, str] | None = None  # (reason, message): clear the admission, hand the quota back
    finish: tuple[str, str] | None = None  # (Succeeded|Failed, message)
    pods_ready: bool | None = None

    def __bool__(self) -> bool:
        return any(v is not None and v is not False for v in vars(self).values())


def sync(kv: KueueView, status: DistributedInferenceStatus, suspended: bool, obs: Observation,
         nodes: int) -> Sync:
    """The Workload changes that follow from the job's decided status and what exists."""
    if not kv.enabled:
        return Sync()
    if not kv.exists:
        return Sync(create=not conditions.finished(status))
    if conditions.finished(status):
        if kv.finished:
            return Sync()
        complete = conditions.is_true(status, "Complete")
        return Sync(finish=("Succeeded" if complete else "Failed", status.message or ""))
    gone = not obs.current_pods and not obs.stale and not obs.statefulset_exists
    release = kv.evicted if kv.evicted is not None and kv.quota_reserved and gone else None
    ready = obs.all_running(nodes) if kv.admitted and kv.evicted is None else None
    return Sync(active=(not suspended) if kv.active == suspended else None, release=release,
                pods_ready=ready if ready is not None and ready != kv.pods_ready else None)


def set_condition(conds: list[Obj], kind: str, value: bool, reason: str, message: str, now: str,
                  generation: int | None) -> list[Obj]:
    """apimeta.SetStatusCondition: upsert, keeping lastTransitionTime unless the status flips."""
    wanted = "True" if value else "False"
    old = next((c for c in conds if c.get("type") == kind), None)
    since = old["lastTransitionTime"] if old is not None and old.get("status") == wanted else now
    new = {"type": kind, "status": wanted, "reason": reason, "message": message[:32768],
           "lastTransitionTime": since, "observedGeneration": generation or 0}
    return [c for c in conds if c.get("type") != kind] + [new]


def status_patch(workload: Obj, change: Sync, now: str) -> Obj | None:
    """A merge patch of the Workload's status for `change`, guarded by its resourceVersion (Kueue writes
    the same status: a conflict means it moved first, and the next pass decides again)."""
    conds = list((workload.get("status") or {}).get("conditions") or [])
    generation = workload["metadata"].get("generation")
    body: Obj = {}
    if change.release is not None:
        reason, message = change.release
        conds = set_condition(conds, "Requeued", reason in REQUEUE_REASONS, reason, message, now, generation)
        conds = set_condition(conds, "QuotaReserved", False, "Pending", message, now, generation)
        conds = set_condition(conds, "Admitted", False, "NoReservation", "The workload has no reservation", now,
                              generation)
        body["admission"] = None
    if change.finish is not None:
        conds = set_condition(conds, "Finished", True, change.finish[0], change.finish[1] or change.finish[0], now,
                              generation)
    if change.pods_ready is not None:
        reason, message = ("PodsReady", "All pods reached readiness and the workload is running") if (
            change.pods_ready) else ("WaitForStart", "Not all pods are ready or succeeded")
        conds = set_condition(conds, "PodsReady", change.pods_ready, reason, message, now, generation)
    if not body and conds == (workload.get("status") or {}).get("conditions"):
        return None
    body["conditions"] = conds
    return {"metadata": {"resourceVersion": workload["metadata"]["resourceVersion"]}, "status": body}
