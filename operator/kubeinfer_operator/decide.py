"""One reconcile decision: (job, observation, now) -> the new status and the actions. Pure.

Reads like a table of contents: finished jobs only expire; then completion, suspension, failure
and restart policies in that order; otherwise the workers should run and we report how they do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from kubeinfer_api.plan import build_plan
from kubeinfer_api.progress import Progress
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_api.status import DistributedInferenceStatus, OutputStatus, ProgressStatus, Reason
from kubeinfer_operator import conditions, failure_policy, gang, kueue, success_policy, suspend, ttl
from kubeinfer_operator.conditions import Event
from kubeinfer_operator.kueue import KueueView, Sync
from kubeinfer_operator.observe import Observation

#: The event of an elastic job's worker pod replaced alone (an event, not a condition: the job keeps running).
WORKER_REPLACED = "WorkerReplaced"


@dataclass(frozen=True)
class Cluster:
    """What the cluster offers, from API discovery (the one input of a decision that is not the job's)."""

    gang: bool = False  # serves scheduling.k8s.io/v1beta1 PodGroups


@dataclass
class Decision:
    status: DistributedInferenceStatus
    workers: bool = False
    gang: bool = False  # the attempt's workers join its PodGroup
    delete_pods: tuple[str, ...] = ()
    force_delete_pods: tuple[str, ...] = ()
    delete_job: bool = False
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    restart_reason: str | None = None
    kueue: Sync = field(default_factory=Sync)  # what the job's Kueue Workload must be told


def merge_progress(old: ProgressStatus | None, report: Progress | None, now: datetime) -> ProgressStatus | None:
    """status.progress from the workers' report; `updatedAt` is when the operator saw it advance."""
    if report is None:
        return old
    advanced = old is None or (old.succeeded, old.failed, old.phase) != (report.succeeded, report.failed, report.phase)
    done = report.succeeded + report.failed
    return ProgressStatus(
        total=report.total, succeeded=report.succeeded, failed=report.failed,
        items_per_second=round(report.items_per_second, 3), eta_seconds=report.eta_seconds,
        percent=min(100, done * 100 // report.total) if report.total else 0, phase=report.phase,
        updated_at=conditions.iso(now) if advanced or old is None else old.updated_at,
    )


def _observed(status: DistributedInferenceStatus, spec: DistributedInferenceSpec, obs: Observation,
              now: datetime, generation: int | None) -> None:
    """Fields that mirror reality whatever the policies decide."""
    status.observed_generation = generation
    status.start_time = status.start_time or conditions.iso(now)
    report = obs.progress
    status.plan = report.plan if report is not None and report.plan is not None else build_plan(spec)
    if report is not None and report.output is not None:
        status.output = report.output
    elif status.output is None:
        status.output = OutputStatus(uri=spec.output.uri)
    if report is not None and report.startup is not None:
        status.startup = report.startup
    if obs.statefulset_exists and not conditions.is_true(status, "Created"):
        conditions.set_condition(status, "Created", True, Reason.CHILDREN_CREATED,
                                 "job ConfigMap, Service, StatefulSet and worker RBAC created", now, generation)


def _report_workers(status: DistributedInferenceStatus, spec: DistributedInferenceSpec, obs: Observation,
                    now: datetime, generation: int | None) -> None:
    """No failure: say whether the gang runs, and end a restart once old pods are gone."""
    nodes = spec.workers.nodes
    attempt = status.attempt
    if not obs.stale and conditions.is_true(status, "Restarting"):
        conditions.set_condition(status, "Restarting", False, Reason.WORKERS_PENDING,
                                 f"attempt {status.attempt} started", now, generation)
    if obs.all_running(nodes):
        conditions.set_condition(status, "Running", True, Reason.WORKERS_RUNNING,
                                 f"{nodes} of {nodes} workers running (attempt {status.attempt})", now, generation)
        return
    if obs.all_running(spec.workers.required):  # an elastic job with minNodes: enough to make progress
        waiting = f"; the scheduler: {obs.unschedulable[0]}" if obs.unschedulable else ""
        conditions.set_condition(status, "Running", True, Reason.WORKERS_RUNNING, (
            f"{obs.running} of {nodes} workers running (attempt {attempt}, minNodes {spec.workers.required}); "
            f"the others join as capacity appears{waiting}"), now, generation)
        return
    if conditions.is_true(status, "Restarting"):
        return
    if obs.unschedulable:
        conditions.set_condition(status, "Running", False, Reason.UNSCHEDULABLE, (
            f"{obs.bound} of {nodes} workers placed (attempt {attempt}); the scheduler: {obs.unschedulable[0]}"),
            now, generation)
        return
    message = f"{obs.running} of {nodes} workers running (attempt {attempt})"
    if obs.waiting:
        message += "; " + "; ".join(obs.waiting)
    conditions.set_condition(status, "Running", False, Reason.WORKERS_PENDING, message, now, generation)


def _finish(decision: Decision, raw_ttl: int | None, now: datetime) -> Decision:
    left = ttl.seconds_left(raw_ttl, decision.status, now)
    if left is not None:
        decision.delete_job = left <= 0
        decision.requeue_after = max(left, 0.0)
    conditions.summarize(decision.status)
    return decision


def decide(spec: DistributedInferenceSpec, old: DistributedInferenceStatus, obs: Observation, now: datetime,
           generation: int | None, cluster: Cluster = Cluster(), queue: KueueView | None = None) -> Decision:
    """`queue`: the job's Kueue Workload when the job names a LocalQueue (None: Kueue is not involved)."""
    status = old.model_copy(deep=True)
    decision = Decision(status=status)
    if conditions.finished(old):
        return _queue_sync(_with_events(_finish(decision, spec.ttl_seconds_after_finished, now), old), spec, obs,
                           queue)
    _observed(status, spec, obs, now, generation)
    outcome = success_policy.judge(spec, obs.progress)
    if outcome is not None:
        status.progress = merge_progress(status.progress, obs.progress, now)
        success_policy.apply(status, outcome, now, generation)
    elif spec.suspend:
        suspend.apply_suspend(status, now, generation)
    elif queue is None or not kueue.hold(status, queue, now, generation):
        _run(decision, spec, obs, now, generation, cluster)
    if not decision.workers:
        # Teardown deletes the StatefulSet; pods on a dead node would hang in Terminating without this.
        decision.force_delete_pods = obs.lost
    return _queue_sync(_with_events(_finish(decision, spec.ttl_seconds_after_finished, now), old), spec, obs, queue)


def _queue_sync(decision: Decision, spec: DistributedInferenceSpec, obs: Observation,
                queue: KueueView | None) -> Decision:
    if queue is not None:
        decision.kueue = kueue.sync(queue, decision.status, spec.suspend, obs, spec.workers.nodes)
    return decision


def _run(decision: Decision, spec: DistributedInferenceSpec, obs: Observation, now: datetime,
         generation: int | None, cluster: Cluster) -> None:
    status = decision.status
    suspend.apply_resume(status, now, generation)
    status.progress = merge_progress(status.progress, obs.progress, now)
    if gang.refuse(status, spec, cluster.gang, now, generation):
        return
    gang.report(status, spec, cluster.gang, now, generation)
    decision.gang = gang.active(spec, cluster.gang)
    charged = _replaced_before(spec, status, obs)  # a replaced pod still terminating is not a new failure
    verdict = None if charged else failure_policy.judge(spec, status, obs, now)
    if charged or (verdict is not None and _replace_alone(decision, spec, verdict, obs)):
        _delete_with(decision, obs, obs.failure.pod if obs.failure else None)
        _report_workers(status, spec, obs, now, generation)
        return
    if verdict is not None:
        failure_policy.apply(status, verdict, now, generation)
        if not verdict.restart:
            return
        decision.restart_reason = verdict.reason
    decision.workers = True
    if verdict is None:
        _report_workers(status, spec, obs, now, generation)
    # After a restart every pod of the old attempt is stale; pods on lost nodes go without grace.
    stale = set(obs.stale) | (set(obs.current_pods) if verdict is not None else set())
    decision.force_delete_pods = tuple(sorted(stale & set(obs.lost)))
    decision.delete_pods = tuple(sorted(stale - set(obs.lost)))
    deadlines = [d for d in (failure_policy.stall_deadline(spec, status), failure_policy.startup_deadline(spec, obs))
                 if d is not None]
    if deadlines:
        decision.requeue_after = max(1.0, (min(deadlines) - now).total_seconds())


def _replace_alone(decision: Decision, spec: DistributedInferenceSpec, verdict: failure_policy.Verdict,
                   obs: Observation) -> bool:
    """strategy.elastic: the other workers need no restart, so only the failed pod is deleted (its StatefulSet
    makes a new one that claims work); the failure is charged once, by the pod's UID."""
    failure, status = verdict.failure, decision.status
    uid = obs.uids.get(failure.pod)
    if not (spec.strategy.elastic and verdict.restart and uid):
        return False
    status.replaced_pods = [*status.replaced_pods, uid][-2 * spec.workers.nodes:]
    status.restarts += int(verdict.charge)
    if status.first_failure is None and not failure.disruption:
        status.first_failure = failure.to_status(status.attempt)
    used = f"{status.restarts} of {spec.failure_policy.max_restarts} restarts used" if verdict.charge else "not counted"
    decision.events.append(Event("Warning", WORKER_REPLACED, (
        f"replacing {failure.pod} alone ({used}); the other workers keep going: {failure.reason}: "
        f"{failure.message}")[:1024]))
    return True


def _replaced_before(spec: DistributedInferenceSpec, status: DistributedInferenceStatus, obs: Observation) -> bool:
    failure = obs.failure
    return bool(spec.strategy.elastic and failure and obs.uids.get(failure.pod) in status.replaced_pods)


def _delete_with(decision: Decision, obs: Observation, pod: str | None) -> None:
    """Delete `pod` (and any pod of an older attempt); pods on lost nodes go without grace."""
    decision.workers = True
    doomed = set(obs.stale) | ({pod} if pod else set())
    decision.force_delete_pods = tuple(sorted(doomed & set(obs.lost)))
    decision.delete_pods = tuple(sorted(doomed - set(obs.lost)))


def decide_invalid(old: DistributedInferenceStatus, message: str, raw_ttl: int | None, now: datetime,
                   generation: int | None) -> Decision:
    """A spec the CRD accepted but that can never run: Failed/InvalidSpec, nothing created."""
    status = old.model_copy(deep=True)
    if not conditions.finished(old):
        status.observed_generation = generation
        conditions.set_condition(status, "Failed", True, Reason.INVALID_SPEC, message, now, generation)
        conditions.clear(status, "Running", Reason.INVALID_SPEC, message, now, generation)
        status.completion_time = conditions.iso(now)
    return _with_events(_finish(Decision(status=status), raw_ttl, now), old)


def _with_events(decision: Decision, old: DistributedInferenceStatus) -> Decision:
    decision.events = conditions.transitions(old, decision.status) + decision.events
    return decision
