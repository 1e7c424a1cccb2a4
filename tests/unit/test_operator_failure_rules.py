"""Which failures restart, which fail at once, which cost no restart: built-in and user rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from unit.builders import JobBuilder, PodBuilder, gang

from kubeinfer_api.status import DistributedInferenceStatus
from kubeinfer_operator import conditions, failure_rules
from kubeinfer_operator.decide import Decision, decide
from kubeinfer_operator.observe import Failure, observe

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def step(job: JobBuilder, status: DistributedInferenceStatus, pods: list[PodBuilder]) -> Decision:
    obs = observe([p.obj() for p in pods], status.attempt, {"node-1": True}, None,
                  {"metadata": {"name": "cats-workers"}})
    return decide(job.spec(), status, obs, T0, 1)


def running(job: JobBuilder, nodes: int = 2) -> DistributedInferenceStatus:
    return step(job, DistributedInferenceStatus(), [p.running() for p in gang("cats", nodes)]).status


def crashed_with(message: str) -> list[PodBuilder]:
    return [PodBuilder("cats", 0).running(), PodBuilder("cats", 1).crashed(exit_code=1, message=message)]


@pytest.mark.parametrize(("message", "why"), [
    ("ModelError: spec.model.uri: s3://models/nothing holds no files", "the model is missing"),
    ("ModelError: spec.model.uri: /models/x is not a directory (is the PVC mounted", "the model is missing"),
    ("StorageError: spec.output.uri: access to s3://out/x denied (403); check the credentials", "access is denied"),
    ("StorageError: spec.output.uri: s3://nobucket/x does not exist (NoSuchBucket); create the bucket",
     "bucket is missing"),
    ("InputError: spec.inputs.uri line 3: not valid JSON", "the inputs are invalid"),
    ("FingerprintMismatch: the output prefix belongs to another job", "another job's outputs"),
    ("ModelNotFound: the worker knows", "no restart can fix it"),
])
def test_permanent_failures_fail_the_job_at_once(message: str, why: str) -> None:
    job = JobBuilder().nodes(2).max_restarts(3)
    d = step(job, running(job), crashed_with(message))
    assert d.status.state == "Failed" and d.status.restarts == 0 and not d.workers
    failed = conditions.get(d.status, "Failed")
    assert failed is not None and failed.reason == "PermanentFailure"
    assert "no restart can fix this" in failed.message and why in failed.message
    first = d.status.first_failure
    assert first is not None and first.pod == "cats-workers-1" and first.reason == message.split(":")[0]


@pytest.mark.parametrize("message", [
    "ModelError: spec.model.uri: cannot download org/x@main: connection reset",
    "StorageError: spec.output.uri: cannot put at s3://out/x after 5 attempts (timeout)",
    "Traceback: something odd",
])
def test_transient_failures_restart_and_count(message: str) -> None:
    job = JobBuilder().nodes(2).max_restarts(3)
    d = step(job, running(job), crashed_with(message))
    assert d.status.state == "Restarting" and d.status.restarts == 1 and d.status.attempt == 1


@pytest.mark.parametrize("pod", [
    PodBuilder("cats", 1).running().disrupted("Evicted by the Eviction API").deleted(),
    PodBuilder("cats", 1).running().disrupted("preempted by a higher priority pod", "PreemptionByScheduler").deleted(),
    PodBuilder("cats", 1).running().disrupted("node drained: NoExecute taint", "DeletionByTaintManager").deleted(),
    PodBuilder("cats", 1).crashed(exit_code=0, message="Drained: SIGTERM; 3 items committed, 0 in flight"),
    PodBuilder("cats", 1).crashed(exit_code=143, message="Drained: SIGTERM", restarted=False),
], ids=["eviction-api", "preemption", "taint", "drained-exit-0", "drained-exit-143"])
def test_disruptions_restart_as_preempted_without_counting(pod: PodBuilder) -> None:
    job = JobBuilder().nodes(2).max_restarts(0)  # no restart allowed, yet a disruption restarts
    d = step(job, running(job), [PodBuilder("cats", 0).running(), pod])
    assert d.status.state == "Restarting" and d.status.restarts == 0 and d.status.attempt == 1
    restarting = conditions.get(d.status, "Restarting")
    assert restarting is not None and restarting.reason == "Preempted"
    assert "not counted" in restarting.message
    assert d.status.first_failure is None, "a disruption is not a failure"
    assert d.restart_reason == "Preempted" and d.workers


def test_kubelet_evictions_and_plain_deletes_still_count() -> None:
    job = JobBuilder().nodes(2).max_restarts(3)
    for pod in (PodBuilder("cats", 1).evicted_by_kubelet(), PodBuilder("cats", 1).running().deleted(),
                PodBuilder("cats", 1).running().disrupted("memory pressure", "TerminationByKubelet").deleted()):
        d = step(job, running(job), [PodBuilder("cats", 0).running(), pod])
        assert d.status.restarts == 1, d.status.conditions


def test_user_rules_come_first_and_match_reason_and_message() -> None:
    rules = [
        {"name": "retry-models", "action": "RestartJob", "onReasons": ["ModelError"]},
        {"action": "FailJob", "onMessagePatterns": [r"CUDA error: .*uncorrectable"]},
        {"action": "RestartJobAndIgnoreMaxRestarts", "onReasons": ["WorkerFailed"], "onMessagePatterns": ["NCCL"]},
    ]
    job = JobBuilder().nodes(2).max_restarts(2).set("failurePolicy.rules", rules)
    retried = step(job, running(job), crashed_with("ModelError: spec.model.uri: s3://m/x holds no files"))
    assert retried.status.state == "Restarting" and retried.status.restarts == 1
    hard = step(job, running(job), crashed_with("RuntimeError: CUDA error: an uncorrectable ECC error"))
    failed = conditions.get(hard.status, "Failed")
    assert failed is not None and "failurePolicy.rules[1]" in failed.message
    free = step(job, running(job), crashed_with("NCCL watchdog timeout"))
    assert free.status.state == "Restarting" and free.status.restarts == 0


def test_a_stored_rule_with_a_bad_pattern_never_matches() -> None:
    rule = failure_rules.Rule("FailJob", "bad", patterns=("(unclosed",))
    assert not rule.matches(Failure(pod="p", reason="X", message="(unclosed"))


@pytest.mark.parametrize(("rule", "problem"), [
    ({"action": "FailJob"}, "spec.failurePolicy.rules[0]: set onReasons, onMessagePatterns or both"),
    ({"action": "FailJob", "onMessagePatterns": ["ok", "(unclosed"]},
     "spec.failurePolicy.rules[0].onMessagePatterns[1]: not a regular expression"),
])
def test_rules_that_can_never_work_are_rejected_naming_the_field(rule: dict[str, object], problem: str) -> None:
    from kubeinfer_api.validation import SpecError, parse_spec

    with pytest.raises(SpecError) as err:
        parse_spec(JobBuilder().set("failurePolicy.rules", [rule]).raw_spec())
    assert problem in str(err.value)
