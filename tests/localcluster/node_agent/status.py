"""Pod status as kubelet reports it, built by pure functions from the agent's container records."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
OWN_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """MicroTime, as Lease.spec.renewTime wants it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ContainerRecord:
    """What the agent knows about one container across its restarts."""

    name: str
    image: str
    container_id: str = ""
    restart_count: int = 0
    running_since: str | None = None  # set while a process runs
    terminated: Obj | None = None  # the current run's end (while not restarted)
    last_terminated: Obj | None = None  # the previous run's end
    waiting: tuple[str, str] = ("ContainerCreating", "")
    restarting: bool = False  # terminated, but a restart is due (CrashLoopBackOff)
    extra: Obj = field(default_factory=dict)


def terminated_state(code: int, message: str, started: str | None, container_id: str) -> Obj:
    """A `state.terminated` block; reasons as containerd reports them."""
    state: Obj = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": started or now(),
        "finishedAt": now(),
        "containerID": container_id,
    }
    if message:
        state["message"] = message
    return state


def container_status(rec: ContainerRecord) -> Obj:
    if rec.running_since is not None:
        state: Obj = {"running": {"startedAt": rec.running_since}}
    elif rec.terminated is not None and not rec.restarting:
        state = {"terminated": rec.terminated}
    else:
        reason, message = rec.waiting
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    last = rec.terminated if rec.restarting else rec.last_terminated
    status: Obj = {
        "name": rec.name,
        "image": rec.image,
        "imageID": "",
        "ready": rec.running_since is not None,
        "started": rec.running_since is not None,
        "restartCount": rec.restart_count,
        "state": state,
        "lastState": {"terminated": last} if last else {},
    }
    if rec.container_id:
        status["containerID"] = rec.container_id
    return status


def _counts(records: list[ContainerRecord]) -> tuple[int, int, int, int]:
    """(running, waiting, stopped, succeeded) with kubelet's rule: a restarting container counts as stopped."""
    running = waiting = stopped = succeeded = 0
    for rec in records:
        if rec.running_since is not None:
            running += 1
        elif rec.terminated is not None:
            stopped += 1
            succeeded += rec.terminated["exitCode"] == 0
        else:
            waiting += 1
    return running, waiting, stopped, succeeded


def pod_phase(policy: str, init_done: bool, init_failed: bool, records: list[ContainerRecord], final: bool) -> str:
    """kubelet's getPhase; `final` = the pod is being deleted and will not restart anything."""
    if init_failed and (policy == "Never" or final):
        return "Failed"
    if not init_done:
        return "Failed" if final else "Pending"
    running, waiting, stopped, succeeded = _counts(records)
    if final and running == 0:
        return "Succeeded" if stopped == succeeded == len(records) else "Failed"
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Running" if policy == "OnFailure" else "Failed"
    return "Pending"


def _condition(ctype: str, ok: bool, reason: str = "", message: str = "") -> Obj:
    cond: Obj = {"type": ctype, "status": "True" if ok else "False"}
    if not ok and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


def pod_conditions(sandbox: bool, init_done: bool, records: list[ContainerRecord], phase: str) -> list[Obj]:
    """Our conditions (without lastTransitionTime, which `merge_conditions` adds on change)."""
    unready = [r.name for r in records if r.running_since is None]
    ready = not unready and init_done
    if phase == "Succeeded":
        reason, message = "PodCompleted", ""
    elif not init_done:
        reason, message = "ContainersNotInitialized", "containers with incomplete status: init"
    else:
        reason, message = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
    return [
        _condition("PodReadyToStartContainers", sandbox),
        _condition("Initialized", init_done, "PodCompleted" if phase == "Succeeded" else "ContainersNotInitialized"),
        _condition("ContainersReady", ready, reason, message),
        _condition("Ready", ready, reason, message),
    ]


def merge_conditions(existing: list[Obj], ours: list[Obj]) -> list[Obj]:
    """Keep conditions others own (PodScheduled, DisruptionTarget); stamp ours on transition only."""
    old = {c["type"]: c for c in existing}
    merged = [c for c in existing if c["type"] not in OWN_CONDITIONS]
    for cond in ours:
        prev = old.get(cond["type"])
        if prev and prev.get("status") == cond["status"] and prev.get("reason") == cond.get("reason"):
            stamped = {**cond, "lastTransitionTime": prev.get("lastTransitionTime") or now()}
        else:
            stamped = {**cond, "lastTransitionTime": now()}
        stamped["lastProbeTime"] = None
        merged.append(stamped)
    return merged


def status_drifted(api_status: Obj, ours: Obj) -> bool:
    """True when the API holds something else than what this agent reports for the fields it owns."""
    for key, value in ours.items():
        if key == "conditions":
            have = {c["type"]: c for c in api_status.get("conditions") or []}
            for cond in value:
                seen = have.get(cond["type"], {})
                if (seen.get("status"), seen.get("reason")) != (cond["status"], cond.get("reason")):
                    return True
        elif api_status.get(key) != value:
            return True
    return False
