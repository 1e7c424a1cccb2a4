"""Disruptions are not failures: suspend and resume, an eviction through the Eviction API, a missing model.

A disrupted job restarts without spending `maxRestarts` (reason Preempted) and loses nothing: every
item is in the manifest exactly once, and the items the ledger held before the disruption keep the
attempt, rank and bytes they were committed with (they were not computed again). A failure no restart
can fix (a model URI with no files) fails the job after its first attempt.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.support.cluster import Cluster, Manifest, conditions, is_true, wait_for
from e2e.support.jobs import fault_job, item_count, job_outputs, launch, succeeded
from e2e.support.ledger import Committed, committed, final, recomputed
from kubeinfer_api import naming

pytestmark = pytest.mark.e2e
FAULT_AT = 3
TIMEOUT = 600


def started(cluster: Cluster, namespace: str, manifest: Manifest) -> str:
    name = launch(cluster, namespace, manifest)
    job = cluster.wait_job(name, namespace, lambda j: succeeded(j) >= FAULT_AT, f"{FAULT_AT} items committed", TIMEOUT)
    assert succeeded(job) < item_count(manifest), "the job finished before the disruption: give it more prompts"
    return name


def assert_nothing_lost_or_redone(cluster: Cluster, namespace: str, manifest: Manifest, before: Committed) -> None:
    """Every item once; the items committed before the disruption were not computed again."""
    run = job_outputs(cluster, namespace, manifest["metadata"]["name"])
    assert len(run.items) == item_count(manifest)
    redone = recomputed(before, run.entries)
    assert not redone, f"items committed before the disruption were computed again: {redone}"
    attempts = [a for a, _, _ in final(run.entries).values()]
    assert max(attempts) > min(a for a, _, _ in before.values()), "no later attempt ran"


@pytest.mark.long(seconds=60)
def test_suspend_mid_job_then_resume(operator: Cluster, job_namespace: str, tiny_models: Any,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = fault_job("pause", job_namespace)
    name = started(operator, job_namespace, manifest)
    before = committed(operator, manifest, monkeypatch)
    assert len(before) >= FAULT_AT
    operator.kubectl("patch", "dinf", name, "-n", job_namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    operator.wait_job(name, job_namespace, lambda j: is_true(j, "Suspended"), "Suspended", 120)
    selector = f"{naming.JOB_LABEL}={name}"
    wait_for(lambda: not operator.items("pods", job_namespace, selector), "workers gone", 120, interval=1)
    operator.kubectl("patch", "dinf", name, "-n", job_namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    job = operator.wait_condition(name, job_namespace, "Complete", TIMEOUT)
    assert job["status"].get("restarts", 0) == 0, "a suspend is not a failure"
    assert_nothing_lost_or_redone(operator, job_namespace, manifest, before)


@pytest.mark.long(seconds=70)
def test_evicted_worker_restarts_as_preempted_without_counting(operator: Cluster, job_namespace: str,
                                                               tiny_models: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = fault_job("evicted", job_namespace)
    manifest["spec"]["failurePolicy"]["maxRestarts"] = 0  # an eviction must not need one
    name = started(operator, job_namespace, manifest)
    before = committed(operator, manifest, monkeypatch)
    pod = f"{naming.workers(name)}-1"
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": job_namespace}}
    operator.kubectl("create", "--raw", f"/api/v1/namespaces/{job_namespace}/pods/{pod}/eviction", "-f", "-",
                     input=json.dumps(eviction))
    restarted = operator.wait_job(name, job_namespace, lambda j: (j.get("status") or {}).get("attempt", 0) >= 1,
                                  "a new attempt after the eviction", 120)
    cause = conditions(restarted).get("Restarting") or conditions(restarted).get("Running") or {}
    assert cause.get("reason") in ("Preempted", "WorkersRunning", "WorkersPending"), json.dumps(cause)
    job = operator.wait_condition(name, job_namespace, "Complete", TIMEOUT)
    assert job["status"].get("restarts", 0) == 0 and job["status"].get("firstFailure") is None
    assert_nothing_lost_or_redone(operator, job_namespace, manifest, before)


def test_missing_model_fails_after_one_attempt(operator: Cluster, job_namespace: str) -> None:
    manifest = fault_job("nofiles", job_namespace, prompts=2)
    manifest["spec"]["model"]["uri"] = "s3://models/does-not-exist"
    manifest["spec"]["failurePolicy"] = {"maxRestarts": 3, "stallTimeoutSeconds": 0}
    name = launch(operator, job_namespace, manifest)
    job = operator.wait_condition(name, job_namespace, "Failed", TIMEOUT)
    status, failed = job["status"], conditions(job)["Failed"]
    assert status.get("restarts", 0) == 0 and status.get("attempt", 0) == 0, "a restart cannot bring the model"
    assert failed["reason"] == "PermanentFailure" and "the model is missing" in failed["message"], json.dumps(failed)
    assert status["firstFailure"]["reason"] == "ModelError" and "does-not-exist" in status["firstFailure"]["message"]
    wait_for(lambda: not operator.items("pods", job_namespace, f"{naming.JOB_LABEL}={name}"), "workers gone", 120)
