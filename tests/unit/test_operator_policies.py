"""Reconcile decisions end to end on pure inputs: restart, fail, stall, complete, suspend, TTL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from unit.builders import JobBuilder, PodBuilder, gang

from kubeinfer_api.progress import Progress, encode
from kubeinfer_api.status import DistributedInferenceStatus, OutputStatus
from kubeinfer_operator import conditions
from kubeinfer_operator.decide import Decision, decide, decide_invalid, merge_progress
from kubeinfer_operator.observe import observe

T0 = datetime(2026, 1, 1, tzinfo=UTC)
READY = {"node-1": True}


def step(job: JobBuilder, status: DistributedInferenceStatus, pods: list[PodBuilder], now: datetime = T0,
         progress: Progress | None = None, nodes: dict[str, bool] | None = None) -> Decision:
    obs = observe([p.obj() for p in pods], status.attempt, nodes or READY,
                  encode(progress) if progress else None, {"metadata": {"name": "cats-workers"}})
    return decide(job.spec(), status, obs, now, 1)


def running_status(job: JobBuilder, nodes: int = 2, now: datetime = T0) -> DistributedInferenceStatus:
    """The status after a pass that saw the whole gang running."""
    return step(job, DistributedInferenceStatus(), [p.running() for p in gang("cats", nodes)], now).status


def test_first_pass_creates_workers_and_reports_them() -> None:
    d = step(JobBuilder().nodes(2), DistributedInferenceStatus(), [])
    assert d.workers and not d.delete_pods and not d.delete_job
    assert d.status.state == "Pending" and d.status.plan is not None and d.status.plan.world_size == 2
    assert d.status.output == OutputStatus(uri="s3://out/cats/")
    assert conditions.is_true(d.status, "Created")  # the StatefulSet was observed
    assert d.status.start_time == "2026-01-01T00:00:00Z"


def test_all_workers_running() -> None:
    job = JobBuilder().nodes(2)
    status = running_status(job)
    assert status.state == "Running"
    assert [e.reason for e in step(job, DistributedInferenceStatus(), [p.running() for p in gang("cats", 2)]).events
            ] == ["ChildrenCreated", "GangSchedulingUnavailable", "WorkersRunning"]


def test_partly_running_is_pending_with_the_stuck_reason() -> None:
    job = JobBuilder().nodes(2)
    d = step(job, DistributedInferenceStatus(), [PodBuilder("cats", 0).running(),
                                                 PodBuilder("cats", 1).waiting("ImagePullBackOff", "nope")])
    running = conditions.get(d.status, "Running")
    assert running is not None and running.status == "False" and running.reason == "WorkersPending"
    assert "1 of 2" in running.message and "ImagePullBackOff" in running.message


def test_workers_that_cannot_start_fail_the_job_after_the_startup_timeout() -> None:
    pods = [PodBuilder("cats", 0).running(),
            PodBuilder("cats", 1).waiting("ErrImagePull", "no such image").scheduled("2026-01-01T00:00:00Z")]
    job = JobBuilder().nodes(2)
    early = step(job, DistributedInferenceStatus(), pods, T0 + timedelta(minutes=5))
    assert early.workers and early.status.state == "Pending" and early.requeue_after == 300
    late = step(job, early.status, pods, T0 + timedelta(minutes=10))
    failed = conditions.get(late.status, "Failed")
    assert failed is not None and failed.reason == "WorkersCannotStart" and "no such image" in failed.message
    assert not late.workers and late.status.restarts == 0, "a restart would not pull the image either"
    assert late.status.first_failure is not None and late.status.first_failure.pod == "cats-workers-1"
    patient = JobBuilder().nodes(2).set("failurePolicy.startupTimeoutSeconds", 0)
    assert step(patient, early.status, pods, T0 + timedelta(days=1)).status.state == "Pending"


def test_a_failed_worker_restarts_the_whole_gang() -> None:
    job = JobBuilder().nodes(2).max_restarts(3)
    status = running_status(job)
    pods = [PodBuilder("cats", 0).running(), PodBuilder("cats", 1).crashed(exit_code=2, message="CUDA error")]
    d = step(job, status, pods, T0 + timedelta(minutes=5))
    assert d.status.attempt == 1 and d.status.restarts == 1 and d.restart_reason == "WorkerFailed"
    assert d.status.state == "Restarting" and d.workers
    assert d.delete_pods == ("cats-workers-0", "cats-workers-1") and d.force_delete_pods == ()
    ff = d.status.first_failure
    assert ff is not None and ff.pod == "cats-workers-1" and ff.exit_code == 2 and ff.attempt == 0
    assert "CUDA error" in ff.message
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "WorkerFailed")]


def test_a_restart_is_not_repeated_for_the_same_failure() -> None:
    """The next pass sees the crashed pod as stale (attempt 0 < 1): delete it, do not restart again."""
    job = JobBuilder().nodes(2)
    status = step(job, running_status(job), [PodBuilder("cats", 0).running(), PodBuilder("cats", 1).crashed()]).status
    d = step(job, status, [PodBuilder("cats", 0).running().deleted(), PodBuilder("cats", 1).crashed()])
    assert d.status.attempt == 1 and d.status.restarts == 1 and d.restart_reason is None
    assert d.delete_pods == ("cats-workers-0", "cats-workers-1") and d.status.state == "Restarting"
    later = step(job, d.status, [PodBuilder("cats", 1).crashed()])
    assert later.status.restarts == 1 and later.delete_pods == ("cats-workers-1",)


def test_an_elastic_job_replaces_the_failed_worker_alone() -> None:
    """strategy.elastic: only the crashed pod is deleted (same attempt), charged once however long it takes to
    go; its successor (a new UID) runs with the untouched others."""
    job = JobBuilder().nodes(3).max_restarts(3).set("strategy.elastic", True)
    status = running_status(job, nodes=3)

    def pods(middle: PodBuilder) -> list[PodBuilder]:
        return [PodBuilder("cats", 0).uid("u0").running(), middle, PodBuilder("cats", 2).uid("u2").running()]

    d = step(job, status, pods(PodBuilder("cats", 1).uid("u1").crashed(exit_code=137)), T0 + timedelta(minutes=5))
    assert (d.status.attempt, d.status.restarts, d.restart_reason) == (0, 1, None)
    assert d.delete_pods == ("cats-workers-1",) and d.force_delete_pods == () and d.workers
    assert d.status.replaced_pods == ["u1"] and d.status.first_failure is not None
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "WorkerReplaced")]
    assert "replacing cats-workers-1 alone (1 of 3 restarts used)" in d.events[0].message
    again = step(job, d.status, pods(PodBuilder("cats", 1).uid("u1").crashed(exit_code=137).deleted()))
    assert (again.status.restarts, again.delete_pods, again.events) == (1, ("cats-workers-1",), [])
    successor = step(job, again.status, pods(PodBuilder("cats", 1).uid("u1b").running()))
    assert successor.delete_pods == () and successor.status.state == "Running" and successor.status.restarts == 1


def test_an_elastic_job_still_fails_when_its_restarts_are_spent() -> None:
    job = JobBuilder().nodes(2).max_restarts(1).set("strategy.elastic", True)
    status = running_status(job)
    first = step(job, status, [PodBuilder("cats", 0).uid("a").running(), PodBuilder("cats", 1).uid("b").crashed()])
    assert first.status.restarts == 1 and first.status.state != "Failed"
    pods = [PodBuilder("cats", 0).uid("c").crashed(), PodBuilder("cats", 1).uid("d").running()]
    second = step(job, first.status, pods)
    failed = conditions.get(second.status, "Failed")
    assert second.status.state == "Failed" and failed is not None and failed.reason == "MaxRestartsExceeded"


def test_restart_ends_when_the_new_attempt_runs() -> None:
    job = JobBuilder().nodes(2)
    status = step(job, running_status(job), [PodBuilder("cats", 0).running(), PodBuilder("cats", 1).crashed()]).status
    d = step(job, status, [p.running() for p in gang("cats", 2, attempt=1)], T0 + timedelta(minutes=6))
    assert d.status.state == "Running" and not conditions.is_true(d.status, "Restarting")
    assert d.delete_pods == ()


def test_max_restarts_exceeded_fails_with_the_first_failure() -> None:
    job = JobBuilder().nodes(1).max_restarts(1)
    status = running_status(job, nodes=1)
    status = step(job, status, [PodBuilder().crashed(message="RendezvousTimeout: no master")]).status
    assert status.restarts == 1
    d = step(job, status, [PodBuilder().attempt(1).crashed(exit_code=9)], T0 + timedelta(minutes=9))
    assert d.status.state == "Failed" and not d.workers and d.status.restarts == 1
    failed = conditions.get(d.status, "Failed")
    assert failed is not None and failed.reason == "MaxRestartsExceeded" and "exit code 9" in failed.message
    assert d.status.first_failure is not None and d.status.first_failure.reason == "RendezvousTimeout"
    assert d.status.completion_time == "2026-01-01T00:09:00Z"


def test_zero_max_restarts_fails_on_the_first_failure() -> None:
    job = JobBuilder().nodes(1).max_restarts(0)
    d = step(job, running_status(job, 1), [PodBuilder().crashed()])
    assert d.status.state == "Failed" and d.status.restarts == 0


def test_pods_on_a_lost_node_are_force_deleted_in_the_restart() -> None:
    job = JobBuilder().nodes(2)
    pods = [PodBuilder("cats", 0).running(), PodBuilder("cats", 1).running().node("node-2")]
    d = step(job, running_status(job), pods, nodes={"node-1": True, "node-2": False})
    assert d.restart_reason == "NodeNotReady" and d.status.attempt == 1
    assert d.force_delete_pods == ("cats-workers-1",) and d.delete_pods == ("cats-workers-0",)


@pytest.mark.parametrize(("pod", "reason"), [
    (PodBuilder("cats", 1).running().deleted(), "PodDeleted"),
    (PodBuilder("cats", 1).running().disrupted().deleted(), "Preempted"),
    (PodBuilder("cats", 1).evicted_by_kubelet(), "PodEvicted"),
])
def test_deleted_or_evicted_pod_restarts_the_gang(pod: PodBuilder, reason: str) -> None:
    job = JobBuilder().nodes(2)
    d = step(job, running_status(job), [PodBuilder("cats", 0).running(), pod])
    assert d.restart_reason == reason and d.status.attempt == 1


def progress(done: int, total: int = 10, phase: str = "running", failed: int = 0) -> Progress:
    return Progress(attempt=0, phase=phase, total=total, succeeded=done, failed=failed)  # type: ignore[arg-type]


def test_stall_watchdog_restarts_after_no_progress() -> None:
    job = JobBuilder().nodes(1).stall_timeout(600)
    pods = [PodBuilder().running()]
    status = step(job, DistributedInferenceStatus(), pods, T0, progress(1)).status
    status = step(job, status, pods, T0 + timedelta(seconds=300), progress(2)).status  # advanced at +300s
    quiet = step(job, status, pods, T0 + timedelta(seconds=899), progress(2))
    assert quiet.restart_reason is None and quiet.requeue_after == pytest.approx(1.0)
    d = step(job, quiet.status, pods, T0 + timedelta(seconds=900), progress(2))
    assert d.restart_reason == "Stalled" and d.status.attempt == 1
    restarting = conditions.get(d.status, "Restarting")
    assert restarting is not None and "no item finished for 600s" in restarting.message


def test_stall_clock_starts_when_the_attempt_runs_not_at_the_last_old_progress() -> None:
    job = JobBuilder().nodes(1).stall_timeout(600)
    status = step(job, DistributedInferenceStatus(), [PodBuilder().running()], T0, progress(2)).status
    status = step(job, status, [PodBuilder().crashed()], T0 + timedelta(seconds=700), progress(2)).status
    new_pods = [PodBuilder().attempt(1).running()]
    status = step(job, status, new_pods, T0 + timedelta(seconds=800), progress(2)).status
    d = step(job, status, new_pods, T0 + timedelta(seconds=1300), progress(2))
    assert d.restart_reason is None  # running since +800s: 500s < 600s


def test_stall_watchdog_disabled_with_zero() -> None:
    job = JobBuilder().nodes(1).stall_timeout(0)
    pods = [PodBuilder().running()]
    status = step(job, DistributedInferenceStatus(), pods, T0, progress(1)).status
    d = step(job, status, pods, T0 + timedelta(days=3), progress(1))
    assert d.restart_reason is None and d.requeue_after is None


def test_progress_advance_time_is_the_operators_observation() -> None:
    first = merge_progress(None, progress(1), T0)
    same = merge_progress(first, progress(1), T0 + timedelta(seconds=30))
    moved = merge_progress(same, progress(2), T0 + timedelta(seconds=60))
    assert first is not None and same is not None and moved is not None
    assert same.updated_at == "2026-01-01T00:00:00Z" and moved.updated_at == "2026-01-01T00:01:00Z"
    assert moved.percent == 20


@pytest.mark.parametrize(("succeeded", "failed", "ratio", "state", "reason"), [
    (10, 0, 1.0, "Complete", "ItemsComplete"),
    (9, 1, 0.9, "Complete", "ItemsComplete"),
    (9, 1, 1.0, "Failed", "TooManyFailedItems"),
])
def test_completion_and_success_policy(succeeded: int, failed: int, ratio: float, state: str, reason: str) -> None:
    job = JobBuilder().nodes(2).min_succeeded(ratio)
    done = Progress(attempt=0, phase="complete", total=10, succeeded=succeeded, failed=failed,
                    output=OutputStatus(uri="s3://out/cats/", manifest="s3://out/cats/manifest.jsonl", objects=9))
    d = step(job, running_status(job), [p.running() for p in gang("cats", 2)], T0 + timedelta(hours=1), done)
    assert d.status.state == state and not d.workers and d.status.restarts == 0
    cond = conditions.get(d.status, state)  # type: ignore[arg-type]
    assert cond is not None and cond.reason == reason
    assert d.status.progress is not None and d.status.progress.succeeded == succeeded
    assert d.status.output is not None and d.status.output.manifest == "s3://out/cats/manifest.jsonl"
    assert not conditions.is_true(d.status, "Running") and d.delete_pods == ()


def test_after_completion_restarted_workers_and_new_reports_change_nothing() -> None:
    job = JobBuilder().nodes(1)
    done = progress(10, phase="complete")
    status = step(job, running_status(job, 1), [PodBuilder().running()], T0, done).status
    d = step(job, status, [PodBuilder().crashed(exit_code=1)], T0 + timedelta(minutes=1), progress(0, phase="loading"))
    assert d.status == status and d.events == [] and not d.workers and d.restart_reason is None


def test_suspend_removes_workers_and_resume_brings_a_new_attempt() -> None:
    job = JobBuilder().nodes(2)
    status = running_status(job)
    d = step(job.suspend(), status, [p.running() for p in gang("cats", 2)], T0 + timedelta(minutes=1))
    assert d.status.state == "Suspended" and not d.workers and d.status.attempt == 1 and d.status.restarts == 0
    assert not conditions.is_true(d.status, "Running")
    again = step(job, d.status, [], T0 + timedelta(minutes=2))
    assert again.status.attempt == 1 and again.events == []  # idempotent while suspended
    # a pod of the suspended attempt still terminating at resume is stale, not a failure
    resumed = step(job.suspend(False), again.status, [PodBuilder("cats", 0).running().deleted()],
                   T0 + timedelta(minutes=3))
    assert resumed.workers and resumed.restart_reason is None and resumed.delete_pods == ("cats-workers-0",)
    suspended = conditions.get(resumed.status, "Suspended")
    assert suspended is not None and suspended.status == "False" and suspended.reason == "JobResumed"
    assert ("Normal", "JobResumed") in [(e.type, e.reason) for e in resumed.events]


@pytest.mark.parametrize(("ttl", "after", "deleted", "requeue"), [
    (None, 10_000, False, None),
    (60, 30, False, 30.0),
    (60, 60, True, 0.0),
    (0, 0, True, 0.0),
])
def test_ttl_after_finished(ttl: int | None, after: int, deleted: bool, requeue: float | None) -> None:
    job = JobBuilder().nodes(1)
    if ttl is not None:
        job = job.ttl(ttl)
    status = step(job, running_status(job, 1), [PodBuilder().running()], T0, progress(10, phase="complete")).status
    d = step(job, status, [], T0 + timedelta(seconds=after))
    assert d.delete_job is deleted and d.requeue_after == requeue


def test_running_jobs_never_expire() -> None:
    job = JobBuilder().nodes(1).ttl(0)
    d = step(job, running_status(job, 1), [PodBuilder().running()], T0 + timedelta(days=1))
    assert not d.delete_job


def test_invalid_spec_fails_once_with_the_message() -> None:
    d = decide_invalid(DistributedInferenceStatus(), "spec.strategy.context: required", None, T0, 1)
    failed = conditions.get(d.status, "Failed")
    assert failed is not None and failed.reason == "InvalidSpec" and "strategy.context" in failed.message
    assert d.status.state == "Failed" and not d.workers
    again = decide_invalid(d.status, "spec.strategy.context: required", None, T0 + timedelta(hours=1), 1)
    assert again.status == d.status and again.events == []


def test_unchanged_world_gives_an_unchanged_status() -> None:
    """Status is written only when it changed: a steady state must decide the very same status."""
    job = JobBuilder().nodes(2)
    pods = [p.running() for p in gang("cats", 2)]
    status = step(job, DistributedInferenceStatus(), pods, T0, progress(3)).status
    d = step(job, status, pods, T0 + timedelta(minutes=3), progress(3))
    assert d.status == status and d.events == []
