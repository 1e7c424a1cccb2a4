"""Faults in the middle of a job: each ends with every item exactly once and outputs equal to one process.

"Mid-job" is made deterministic by waiting until `status.progress.succeeded >= FAULT_AT` on a job
slow enough (24 prompts, 2 s each by the workers' test-only delay; progress is reported every 5 s)
that it cannot finish first. After the fault, the items that were committed before it must keep their
first attempt in the manifest: the new attempt skipped them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.support.cluster import OPERATOR_NAMESPACE, Cluster, Manifest, conditions, is_true, wait_for
from e2e.support.jobs import (
    RunOutputs,
    assert_same_items,
    fault_job,
    item_count,
    job_outputs,
    launch,
    output_prefix,
    pod_threads,
    shared_reference_run,
    succeeded,
)
from kubeinfer_api import naming

pytestmark = pytest.mark.e2e
FAULT_AT = 3
TIMEOUT = 600
S3_OUTAGE_SECONDS = 20


@pytest.fixture
def check_run(
    operator: Cluster, job_namespace: str, tiny_models: Any, e2e_session: Path
) -> Callable[[Manifest], RunOutputs]:
    """Checks a finished job's outputs against the single-process reference of its spec."""

    def check(manifest: Manifest) -> RunOutputs:
        reference = shared_reference_run(manifest, e2e_session / "references", operator.backend.s3_host_env(),
                                         pod_threads(manifest))
        run = job_outputs(operator, job_namespace, manifest["metadata"]["name"])
        assert_same_items(run, reference, item_count(manifest))
        return run

    return check


def started(cluster: Cluster, namespace: str, manifest: Manifest) -> tuple[str, set[str]]:
    """Launch, wait until FAULT_AT items are committed, return the job name and the pod names then."""
    name = launch(cluster, namespace, manifest)
    job = cluster.wait_job(name, namespace, lambda j: succeeded(j) >= FAULT_AT, f"{FAULT_AT} items committed", TIMEOUT)
    assert succeeded(job) < item_count(manifest), "the job finished before the fault: give fault_job more prompts"
    return name, {p["metadata"]["name"] for p in cluster.items("pods", namespace, f"{naming.JOB_LABEL}={name}")}


def assert_resumed(run: RunOutputs, committed_before: int) -> None:
    """Items committed before the fault were not redone: they keep the first attempt."""
    attempts = [int(entry["attempt"]) for entry in run.entries.values()]
    first = min(attempts)
    assert max(attempts) > first, f"every item came from one attempt ({first}): no gang restart happened"
    kept = sum(a == first for a in attempts)
    assert kept >= committed_before, f"only {kept} items kept attempt {first}; {committed_before} were committed"


def worker(name: str, ordinal: int) -> str:
    return f"{naming.workers(name)}-{ordinal}"


@pytest.mark.long(seconds=65)
def test_worker_process_killed_mid_job(operator: Cluster, job_namespace: str, check_run: Any) -> None:
    manifest = fault_job("killed", job_namespace)
    name, _ = started(operator, job_namespace, manifest)
    # As the pod's securityContext says: the workers run as uid 1000 on a read-only root filesystem.
    assert operator.backend.container_identity(job_namespace, worker(name, 1)) == (1000, True)
    operator.backend.kill_container(job_namespace, worker(name, 1))
    job = operator.wait_condition(name, job_namespace, "Complete", TIMEOUT)
    assert job["status"]["restarts"] >= 1
    assert_resumed(check_run(manifest), FAULT_AT)


@pytest.mark.long(seconds=65)
def test_worker_pod_deleted_mid_job(operator: Cluster, job_namespace: str, check_run: Any) -> None:
    manifest = fault_job("deleted", job_namespace)
    name, _ = started(operator, job_namespace, manifest)
    operator.kubectl("delete", "pod", worker(name, 0), "-n", job_namespace, "--wait=false")
    job = operator.wait_condition(name, job_namespace, "Complete", TIMEOUT)
    assert job["status"]["restarts"] >= 1
    assert_resumed(check_run(manifest), FAULT_AT)


@pytest.mark.long(seconds=45)
def test_elastic_worker_pod_deleted_mid_job_is_replaced_alone(operator: Cluster, job_namespace: str,
                                                              check_run: Any) -> None:
    """strategy.elastic: deleting one of three worker pods replaces that pod only; the other two keep their pods
    (same UIDs) and the job's attempt, and every item is written once, equal to one process."""
    manifest = fault_job("elastic", job_namespace, nodes=3)
    manifest["spec"]["strategy"]["elastic"] = True
    name, _ = started(operator, job_namespace, manifest)
    uids: dict[str, set[str]] = {}

    def note_pods() -> None:  # on every poll until Complete (the operator then deletes the pods)
        for pod in operator.items("pods", job_namespace, f"{naming.JOB_LABEL}={name}"):
            uids.setdefault(pod["metadata"]["name"], set()).add(pod["metadata"]["uid"])

    note_pods()
    operator.kubectl("delete", "pod", worker(name, 1), "-n", job_namespace, "--wait=false")
    job = operator.wait_condition(name, job_namespace, "Complete", TIMEOUT, each_poll=note_pods)
    assert job["status"]["attempt"] == 0 and job["status"]["restarts"] == 1, job["status"]
    survivors = {pod: uids[pod] for pod in (worker(name, 0), worker(name, 2))}
    assert all(len(seen) == 1 for seen in survivors.values()), f"the survivors were replaced: {survivors}"
    assert len(uids[worker(name, 1)]) == 2, f"the deleted pod was not replaced once: {uids}"
    run = check_run(manifest)
    assert {int(entry["attempt"]) for entry in run.entries.values()} == {0}


@pytest.fixture
def spare_node(operator: Cluster) -> Iterator[str]:
    node = operator.backend.spare_node()
    yield node
    operator.backend.restore_node(node)


@pytest.mark.long(seconds=80)
def test_node_lost_mid_job(operator: Cluster, job_namespace: str, check_run: Any, spare_node: str) -> None:
    manifest = fault_job("nodelost", job_namespace)
    workers = manifest["spec"]["workers"]
    # Both workers prefer the spare node (tainted so nothing else lands there); once it is lost they must move.
    workers["tolerations"] = [{"key": "kubeinfer-e2e/spare", "operator": "Exists", "effect": "NoSchedule"}]
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [spare_node]}]}
    workers["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": term}]}}  # fmt: skip
    name, _ = started(operator, job_namespace, manifest)
    placed = {p["spec"].get("nodeName") for p in operator.items("pods", job_namespace, f"{naming.JOB_LABEL}={name}")}
    assert placed == {spare_node}, f"workers not on the spare node: {placed}"
    operator.backend.lose_node(spare_node)
    job = operator.wait_condition(name, job_namespace, "Complete", TIMEOUT)
    assert job["status"]["restarts"] >= 1
    assert_resumed(check_run(manifest), FAULT_AT)


@pytest.mark.serial  # every job's operator goes away for a while
def test_operator_restarted_mid_job(operator: Cluster, job_namespace: str, check_run: Any) -> None:
    manifest = fault_job("opkill", job_namespace)
    name, pods_before = started(operator, job_namespace, manifest)
    old = operator.operator_pod()
    assert old is not None
    operator.kubectl("delete", "pod", old["metadata"]["name"], "-n", OPERATOR_NAMESPACE, "--wait=false")
    wait_for(lambda: (p := operator.operator_pod()) and p["metadata"]["uid"] != old["metadata"]["uid"],
             "a new operator pod from the Deployment", 120)  # fmt: skip
    operator.wait_operator_running()
    job = operator.wait_condition(name, job_namespace, "Complete", TIMEOUT)
    # A restarted operator adopts what exists: no gang restart, no second set of children.
    assert job["status"].get("restarts", 0) == 0
    assert len(operator.items("statefulsets", job_namespace, f"{naming.JOB_LABEL}={name}")) <= 1
    assert pods_before, "no worker pods were seen before the fault"
    check_run(manifest)


@pytest.mark.serial  # every job's storage goes away for a while
def test_s3_unavailable_for_a_while(operator: Cluster, job_namespace: str, check_run: Any) -> None:
    manifest = fault_job("s3down", job_namespace)
    name, _ = started(operator, job_namespace, manifest)
    operator.backend.stop_s3()
    try:
        time.sleep(S3_OUTAGE_SECONDS)  # uploads and progress reports fail meanwhile; workers must retry
    finally:
        operator.backend.start_s3()
    job = operator.wait_condition(name, job_namespace, "Complete", TIMEOUT)
    # Uploads are retried through the outage: no gang restart was needed.
    assert job["status"].get("restarts", 0) == 0, json.dumps(job["status"].get("firstFailure"))
    check_run(manifest)


def test_rendezvous_that_never_succeeds_fails_bounded(operator: Cluster, job_namespace: str) -> None:
    manifest = fault_job("norendezvous", job_namespace, prompts=2)
    spec = manifest["spec"]
    # A master address that never resolves (a pod that does not exist); user env wins over injected env.
    nowhere = f"{naming.workers('norendezvous')}-9.{naming.workers('norendezvous')}.{job_namespace}.svc"
    spec["workers"]["env"] = [{"name": "MASTER_ADDR", "value": nowhere}, {"name": "PET_MASTER_ADDR", "value": nowhere}]
    spec["rendezvous"] = {"timeoutSeconds": 10}
    spec["failurePolicy"] = {"maxRestarts": 1, "stallTimeoutSeconds": 0}
    name = launch(operator, job_namespace, manifest)
    job = operator.wait_condition(name, job_namespace, "Failed", TIMEOUT)
    failure = job["status"]["firstFailure"]
    assert failure["reason"] == "RendezvousTimeout", json.dumps(failure)
    assert nowhere.split(".")[0] in failure.get("message", ""), "the message should name the unreachable master"
    assert job["status"]["restarts"] <= 1, "restarts beyond failurePolicy.maxRestarts"
    _assert_workers_gone(operator, job_namespace, name)


def test_workers_that_cannot_start_fail_without_restarts(operator: Cluster, job_namespace: str) -> None:
    """A Secret that does not exist: kubelet reports CreateContainerConfigError, which no restart fixes."""
    manifest = fault_job("nosecret", job_namespace, prompts=2)
    ref = {"secretKeyRef": {"name": "no-such-secret", "key": "token"}}
    manifest["spec"]["workers"]["env"] = [{"name": "API_TOKEN", "valueFrom": ref}]
    manifest["spec"]["failurePolicy"] = {"maxRestarts": 3, "startupTimeoutSeconds": 10}
    name = launch(operator, job_namespace, manifest)
    job = operator.wait_condition(name, job_namespace, "Failed", TIMEOUT)
    failed = conditions(job)["Failed"]
    assert failed["reason"] == "WorkersCannotStart" and "no-such-secret" in failed["message"], json.dumps(failed)
    assert job["status"].get("restarts", 0) == 0
    assert job["status"]["firstFailure"]["pod"].startswith(naming.workers(name))
    _assert_workers_gone(operator, job_namespace, name)


def test_too_many_failed_items_fail_the_job_once(operator: Cluster, job_namespace: str, tiny_models: Any) -> None:
    """An item the pipeline rejects fails the same way on every attempt: Failed at once, with _FAILED."""
    manifest = fault_job("baditems", job_namespace, prompts=1)
    lines = [{"id": "good-1", "prompt": "a"}, {"id": "bad", "prompt": "b", "no_such_argument": 1},
             {"id": "good-2", "prompt": "c"}]
    key = f"{job_namespace}/inputs/prompts.jsonl"
    operator.backend.s3_client().put_object(Bucket="outputs", Key=key,
                                            Body="".join(json.dumps(line) + "\n" for line in lines).encode())
    manifest["spec"]["inputs"] = {"uri": f"s3://outputs/{key}"}
    name = launch(operator, job_namespace, manifest)
    job = operator.wait_condition(name, job_namespace, "Failed", TIMEOUT)
    failed = conditions(job)["Failed"]
    assert failed["reason"] == "TooManyFailedItems" and "no_such_argument" in failed["message"], json.dumps(failed)
    assert job["status"].get("restarts", 0) == 0, "retrying the same items would fail the same way"
    assert (job["status"]["progress"]["succeeded"], job["status"]["progress"]["failed"]) == (2, 1)
    objects = operator.s3_objects("outputs", output_prefix(job_namespace, name))
    assert "_SUCCESS" not in objects and json.loads(objects["_FAILED"])["failed"] == ["bad"]
    _assert_workers_gone(operator, job_namespace, name)


def test_max_restarts_exhausted_fails_with_the_first_failure(operator: Cluster, job_namespace: str) -> None:
    manifest = fault_job("nomodel", job_namespace, prompts=2)
    manifest["spec"]["model"]["uri"] = "s3://models/does-not-exist"
    # A missing model fails at once by default; a user rule makes it worth a restart (the model may appear).
    retry = {"name": "model-may-appear", "action": "RestartJob", "onReasons": ["ModelError"]}
    manifest["spec"]["failurePolicy"] = {"maxRestarts": 1, "stallTimeoutSeconds": 0, "rules": [retry]}
    name = launch(operator, job_namespace, manifest)
    job = operator.wait_condition(name, job_namespace, "Failed", TIMEOUT)
    status = job["status"]
    assert status["restarts"] == 1
    assert conditions(job)["Failed"]["reason"] == "MaxRestartsExceeded"
    failure = status["firstFailure"]
    assert failure["pod"].startswith(naming.workers(name)) and failure["exitCode"] != 0
    assert "does-not-exist" in failure.get("message", ""), json.dumps(failure)
    _assert_workers_gone(operator, job_namespace, name)


@pytest.mark.long(seconds=50)
def test_suspend_and_resume(operator: Cluster, job_namespace: str, check_run: Any) -> None:
    manifest = fault_job("suspended", job_namespace)
    name, _ = started(operator, job_namespace, manifest)
    operator.kubectl("patch", "dinf", name, "-n", job_namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    operator.wait_job(name, job_namespace, lambda j: is_true(j, "Suspended"), "Suspended", 120)
    _assert_workers_gone(operator, job_namespace, name)
    committed = succeeded(operator.job(name, job_namespace))
    operator.kubectl("patch", "dinf", name, "-n", job_namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    operator.wait_condition(name, job_namespace, "Complete", TIMEOUT)
    assert_resumed(check_run(manifest), committed)


def test_deleting_a_running_job_removes_every_child(operator: Cluster, job_namespace: str) -> None:
    manifest = fault_job("deleteme", job_namespace)
    name, _ = started(operator, job_namespace, manifest)
    operator.kubectl("delete", "dinf", name, "-n", job_namespace, "--wait=true", timeout=120)
    kinds = "statefulsets,services,configmaps,serviceaccounts,roles,rolebindings,pods"

    def children() -> list[str]:
        out = operator.kubectl("get", kinds, "-n", job_namespace, "-o", "name").stdout.split()
        return [o for o in out if name in o]

    wait_for(lambda: not children(), f"every child of {name} deleted", 120, interval=1)


def _assert_workers_gone(cluster: Cluster, namespace: str, name: str) -> None:
    selector = f"{naming.JOB_LABEL}={name}"
    wait_for(lambda: not cluster.items("pods", namespace, selector), f"worker pods of {name} gone", 120, interval=1)
