"""Gang restart, bounded: a failed, evicted, deleted, lost or stalled worker restarts every worker.

A restart is attempt+1 in status (written first), then the StatefulSet template annotation follows
and every pod of an older attempt is deleted. After `maxRestarts` restarts the job is Failed with
reason MaxRestartsExceeded, so a job never loops or sits in Restarting forever. Which failures
restart, which fail at once and which cost no restart is `failure_rules`' call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_api.status import DistributedInferenceStatus, Reason
from kubeinfer_operator import conditions, failure_rules
from kubeinfer_operator.observe import Failure, Observation


@dataclass(frozen=True)
class Verdict:
    """`restart` False means the job fails; `charge` False restarts without counting against maxRestarts."""

    restart: bool
    reason: str
    message: str
    failure: Failure
    charge: bool = True


def stall_deadline(spec: DistributedInferenceSpec, status: DistributedInferenceStatus) -> datetime | None:
    """When the running gang counts as stalled: the later of 'running since' and 'last advance'."""
    timeout = spec.failure_policy.stall_timeout_seconds
    running = conditions.get(status, "Running")
    if timeout <= 0 or running is None or running.status != "True":
        return None
    marks = [conditions.parse_time(running.last_transition_time)]
    if status.progress is not None:
        marks.append(conditions.parse_time(status.progress.updated_at))
    baseline = max(m for m in marks if m is not None) if any(marks) else None
    return None if baseline is None else baseline + timedelta(seconds=timeout)


def stalled(spec: DistributedInferenceSpec, status: DistributedInferenceStatus, now: datetime) -> Failure | None:
    deadline = stall_deadline(spec, status)
    if deadline is None or now < deadline:
        return None
    done = (status.progress.succeeded + status.progress.failed) if status.progress else 0
    total = status.progress.total if status.progress else 0
    return Failure(pod="", reason=Reason.STALLED, time=conditions.iso(now), message=(
        f"no item finished for {spec.failure_policy.stall_timeout_seconds}s "
        f"({done} of {total} done); raise failurePolicy.stallTimeoutSeconds if items are this slow"))


def startup_deadline(spec: DistributedInferenceSpec, obs: Observation) -> datetime | None:
    """When workers stuck in a waiting state no restart fixes fail the job."""
    timeout = spec.failure_policy.startup_timeout_seconds
    since = conditions.parse_time(obs.stuck_since)
    return None if timeout <= 0 or since is None else since + timedelta(seconds=timeout)


def cannot_start(spec: DistributedInferenceSpec, obs: Observation, now: datetime) -> Failure | None:
    deadline = startup_deadline(spec, obs)
    if deadline is None or now < deadline or not obs.waiting:
        return None
    pod, _, detail = obs.waiting[0].partition(": ")
    return Failure(pod=pod, reason=Reason.WORKERS_CANNOT_START, time=conditions.iso(now), message=(
        f"{detail} for over {spec.failure_policy.startup_timeout_seconds}s; a restart cannot fix this: correct "
        "workers.image or the Secret/ConfigMap the pod references, then re-create the job "
        "(failurePolicy.startupTimeoutSeconds sets the wait)"))


def judge(spec: DistributedInferenceSpec, status: DistributedInferenceStatus, obs: Observation,
          now: datetime) -> Verdict | None:
    """Restart, fail, or nothing to do (None)."""
    stuck = None if obs.failure else cannot_start(spec, obs, now)
    if stuck is not None:
        return Verdict(False, stuck.reason, f"attempt {status.attempt}: {stuck.pod}: {stuck.message}", stuck)
    failure = obs.failure or stalled(spec, status, now)
    if failure is None:
        return None
    where = f"{failure.pod}: " if failure.pod else ""
    detail = f"attempt {status.attempt}: {where}{failure.reason}: {failure.message}"
    action, why = failure_rules.classify(spec, failure)
    if action == "FailJob":
        return Verdict(False, Reason.PERMANENT_FAILURE, f"{detail}; no restart can fix this ({why})", failure)
    if action == "RestartJobAndIgnoreMaxRestarts":
        return Verdict(True, failure.reason, f"restart not counted ({why}): {detail}", failure, charge=False)
    limit = spec.failure_policy.max_restarts
    if status.restarts >= limit:
        return Verdict(False, Reason.MAX_RESTARTS_EXCEEDED,
                       f"{status.restarts} of {limit} restarts used; last failure: {detail}", failure)
    return Verdict(True, failure.reason, f"restart {status.restarts + 1} of {limit}: {detail}", failure)


def apply(status: DistributedInferenceStatus, verdict: Verdict, now: datetime, generation: int | None) -> None:
    """Record the verdict in status (the caller writes it before touching any pod)."""
    if status.first_failure is None and not verdict.failure.disruption:
        status.first_failure = verdict.failure.to_status(status.attempt)
    if verdict.restart:
        status.attempt += 1
        status.restarts += int(verdict.charge)
        conditions.set_condition(status, "Restarting", True, verdict.reason, verdict.message, now, generation)
        conditions.set_condition(status, "Running", False, verdict.reason, verdict.message, now, generation)
        return
    conditions.set_condition(status, "Failed", True, verdict.reason, verdict.message, now, generation)
    conditions.clear(status, "Running", verdict.reason, verdict.message, now, generation)
    conditions.clear(status, "Restarting", verdict.reason, verdict.message, now, generation)
    status.completion_time = conditions.iso(now)
