"""Turn what the cluster shows (pods, nodes, progress ConfigMap) into an Observation. Pure.

Only pods of the current attempt count: pods left over from an earlier attempt are `stale` (to be
deleted), so the evidence of a failure that already caused a restart never causes a second one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kubeinfer_api.naming import ATTEMPT_ANNOTATION, CHILDREN_HASH
from kubeinfer_api.progress import Progress, decode
from kubeinfer_api.status import FirstFailure, Reason

Obj = dict[str, Any]
#: A worker may classify its own failure: a termination message "SomeReason: details", the reason in
#: CamelCase with at least two words (so log lines such as "INFO: ..." or "Traceback: ..." are not reasons).
_WORKER_REASON = re.compile(r"^((?:[A-Z][a-z0-9]+){2,8}): ")
#: Waiting reasons that no restart can fix; shown in the Running condition's message.
STUCK_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                           "CreateContainerConfigError", "CreateContainerError"})
MESSAGE_LIMIT = 2000
GANG_PREFIX = "pod group is unschedulable, "


#: DisruptionTarget reasons that say the cluster took the pod away (preemption, a drain through the Eviction
#: API, a NoExecute taint): not the job's fault. Kubelet terminations (node pressure, maybe the job's own
#: memory) and PodGC (a vanished node) stay failures that count.
DISRUPTIONS = frozenset({"PreemptionByScheduler", "EvictionByEvictionAPI", "DeletionByTaintManager"})
#: A worker that stopped because it was asked to (SIGTERM) says so with this termination message prefix.
DRAINED = "Drained:"


@dataclass(frozen=True)
class Failure:
    """Why the gang must restart: the earliest failure among the current attempt's pods."""

    pod: str
    reason: str
    message: str
    container: str | None = None
    exit_code: int | None = None
    time: str | None = None
    disruption: bool = False  # the cluster took the worker away: a restart that costs no maxRestarts

    def to_status(self, attempt: int) -> FirstFailure:
        return FirstFailure(pod=self.pod, container=self.container, exit_code=self.exit_code,
                            reason=self.reason, message=self.message[-4096:], attempt=attempt, time=self.time)


@dataclass(frozen=True)
class Observation:
    current_pods: tuple[str, ...] = ()
    running: int = 0
    bound: int = 0  # current pods the scheduler has placed on a node
    unschedulable: tuple[str, ...] = ()  # the scheduler's reasons for current pods it cannot place
    stale: tuple[str, ...] = ()
    lost: tuple[str, ...] = field(default=())
    failure: Failure | None = None
    waiting: tuple[str, ...] = ()
    stuck_since: str | None = None  # when the earliest pod now in a STUCK_WAITING state was scheduled
    progress: Progress | None = None
    statefulset_exists: bool = False
    children_hash: str | None = None  # what the last full apply wrote on the StatefulSet
    uids: dict[str, str] = field(default_factory=dict)  # pod name -> uid, to delete exactly the pods seen

    def all_running(self, nodes: int) -> bool:
        return self.running >= nodes and not self.stale


def pod_attempt(pod: Obj) -> int | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(ATTEMPT_ANNOTATION)
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return None


def _name(pod: Obj) -> str:
    return str(pod["metadata"]["name"])


def _trim(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MESSAGE_LIMIT else "..." + text[-MESSAGE_LIMIT:]


def container_failure(pod: Obj) -> Failure | None:
    """A container that exited non-zero now or before its last restart (exit 0 is a finished worker), or
    one that drained on SIGTERM (a disruption, whatever its exit code)."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        for state_key in ("state", "lastState"):
            term = (cs.get(state_key) or {}).get("terminated")
            if term and str(term.get("message") or "").startswith(DRAINED):
                return Failure(pod=_name(pod), reason=Reason.PREEMPTED, message=_trim(term["message"]),
                               container=cs.get("name"), exit_code=term.get("exitCode"),
                               time=term.get("finishedAt"), disruption=True)
            if term and term.get("exitCode", 0) != 0:
                text = _trim(term.get("message") or "")
                match = _WORKER_REASON.match(text)
                reason = match.group(1) if match else Reason.WORKER_FAILED
                summary = f"{term.get('reason') or 'Error'} (exit code {term.get('exitCode')})"
                # A worker-given reason is carried separately; keep only its explanation.
                message = text[match.end():] if match else (f"{summary}: {text}" if text else summary)
                return Failure(pod=_name(pod), reason=reason, message=message, container=cs.get("name"),
                               exit_code=term.get("exitCode"), time=term.get("finishedAt"))
    return None


def pod_failure(pod: Obj, node_ready: dict[str, bool]) -> Failure | None:
    """Deleted, evicted, failed, on a NotReady node, or a container that failed."""
    meta, status = pod["metadata"], pod.get("status") or {}
    disruption = next((c for c in status.get("conditions") or []
                       if c.get("type") == "DisruptionTarget" and c.get("status") == "True"), None)
    if disruption and meta.get("deletionTimestamp") and disruption.get("reason") in DISRUPTIONS:
        message = f"{disruption['reason']}: {disruption.get('message') or 'the pod was taken away'}"
        return Failure(pod=_name(pod), reason=Reason.PREEMPTED, message=_trim(message),
                       time=meta.get("deletionTimestamp"), disruption=True)
    if status.get("reason") == "Evicted" or (disruption and meta.get("deletionTimestamp")):
        message = (disruption or {}).get("message") or status.get("message") or "the pod was evicted"
        return Failure(pod=_name(pod), reason=Reason.POD_EVICTED, message=_trim(message),
                       time=meta.get("deletionTimestamp"))
    if meta.get("deletionTimestamp"):
        return Failure(pod=_name(pod), reason=Reason.POD_DELETED,
                       message="the pod was deleted while the job was running", time=meta["deletionTimestamp"])
    node = (pod.get("spec") or {}).get("nodeName")
    if node and not node_ready.get(node, True):
        return Failure(pod=_name(pod), reason=Reason.NODE_NOT_READY, message=f"node {node} is NotReady")
    found = container_failure(pod)
    if found is None and status.get("phase") == "Failed":
        found = Failure(pod=_name(pod), reason=Reason.WORKER_FAILED,
                        message=_trim(status.get("message") or status.get("reason") or "pod failed"))
    return found


def is_running(pod: Obj) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
        return False
    containers = status.get("containerStatuses") or []
    return bool(containers) and all("running" in (cs.get("state") or {}) for cs in containers)


def unschedulable_reason(pod: Obj) -> str | None:
    """The scheduler's message on a pod it could not place (PodScheduled False, reason Unschedulable)."""
    if (pod.get("spec") or {}).get("nodeName"):
        return None
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == ("PodScheduled", "False", "Unschedulable"):
            text = str(cond.get("message") or "unschedulable")
            while text.startswith(GANG_PREFIX * 2):  # the gang plugin repeats its own prefix
                text = text[len(GANG_PREFIX):]
            return text
    return None


def scheduler_says(pods: list[Obj]) -> tuple[str, ...]:
    """The pods' scheduling failures, a gang's verdict first (it names why the whole group waits)."""
    found = [(m, _name(p)) for p in pods if (m := unschedulable_reason(p)) is not None]
    found.sort(key=lambda pair: (not pair[0].startswith(GANG_PREFIX), pair[1]))
    return tuple(f"{pod}: {message}" for message, pod in found)


def waiting_reasons(pod: Obj) -> list[str]:
    out = []
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            out.append(f"{_name(pod)}: {waiting['reason']}: {waiting.get('message', '')}".strip())
    return out


def stuck_since(pods: list[Obj]) -> str | None:
    """The earliest PodScheduled time of the pods in a stuck waiting state: image pulls begin then."""
    times: list[str | None] = []
    for pod in pods:
        if waiting_reasons(pod):
            conds = (pod.get("status") or {}).get("conditions") or []
            scheduled: Obj = next((c for c in conds if c.get("type") == "PodScheduled" and c.get("status") == "True"),
                                  {})
            times.append(scheduled.get("lastTransitionTime") or pod["metadata"].get("creationTimestamp"))
    return min((t for t in times if t), default=None)


def observe(pods: list[Obj], attempt: int, node_ready: dict[str, bool], progress_data: dict[str, str] | None,
            statefulset: Obj | None) -> Observation:
    """Classify the job's worker pods against the current attempt."""
    current = [p for p in pods if pod_attempt(p) == attempt]
    stale = tuple(sorted(_name(p) for p in pods if pod_attempt(p) != attempt))
    lost = tuple(sorted(_name(p) for p in pods
                        if not node_ready.get((p.get("spec") or {}).get("nodeName") or "", True)))
    failures = [f for f in (pod_failure(p, node_ready) for p in current) if f is not None]
    failures.sort(key=lambda f: (f.time or "9999", f.pod))
    return Observation(
        current_pods=tuple(sorted(_name(p) for p in current)),
        running=sum(1 for p in current if is_running(p)),
        bound=sum(1 for p in current if (p.get("spec") or {}).get("nodeName")),
        unschedulable=scheduler_says(current),
        stale=stale,
        lost=lost,
        failure=failures[0] if failures else None,
        waiting=tuple(w for p in current for w in waiting_reasons(p)),
        stuck_since=stuck_since(current),
        progress=decode(progress_data),
        statefulset_exists=statefulset is not None,
        children_hash=((statefulset or {}).get("metadata", {}).get("annotations") or {}).get(CHILDREN_HASH),
        uids={_name(p): str(p["metadata"].get("uid", "")) for p in pods if p["metadata"].get("uid")},
    )
