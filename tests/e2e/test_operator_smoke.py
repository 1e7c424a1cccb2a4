"""The operator as a local process against the real control plane, with exactly its declared RBAC.

No node runs them: the StatefulSet controller creates the worker pods and they stay unscheduled, and
the test plays the kubelet and the workers by writing pod status and the progress ConfigMap. That
exercises the whole control loop (children, gang restart, max restarts, suspend/resume, completion,
TTL, operator restart) through the real apiserver, controllers and RBAC.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from unit.builders import JobBuilder

from e2e.conftest import Kubectl, wait_for
from e2e.support import policies
from e2e.support.cluster import OPERATOR_NAMESPACE
from kubeinfer_api.crd import build_crd
from kubeinfer_api.naming import ATTEMPT_ANNOTATION, selector
from kubeinfer_api.progress import Progress, encode
from kubeinfer_operator.kube import Kube, load_api_client
from kubeinfer_operator.permissions import CLUSTER_RULES, NAMESPACED_RULES
from kubeinfer_operator.reconciler import REPAIR_SECONDS, Reconciler, Seen
from kubeinfer_operator.settings import Settings
from localcluster.binaries import binary, free_port, log_tail
from localcluster.controlplane import ControlPlane

# Scales the chart's operator to 0 for the module: nothing else may run meanwhile.
pytestmark = [pytest.mark.e2e, pytest.mark.serial, pytest.mark.xdist_group("smoke")]
TIMEOUT = 60
CHART_PODS = "app.kubernetes.io/name=kubeinfer"  # the chart's operator Deployment and its pods


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> Kube:
    return Kube(load_api_client(str(control_plane.admin_kubeconfig)))


@pytest.fixture(scope="module")
def crd(kubectl: Kubectl) -> None:
    """The CRD as generated from the models (equal to crds/, which the drift test checks)."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(build_crd()))
    kubectl("wait", "--for=condition=Established", "crd/distributedinferences.kubeinfer.io", "--timeout=60s")


class OperatorProcess:
    """`kubeinfer-operator --all-namespaces` with a ServiceAccount kubeconfig; restartable."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.kubeconfig, self.log = kubeconfig, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBEINFER_METRICS_PORT": str(free_port()),
               "KUBEINFER_WORKER_IMAGE": "kubeinfer/runtime:smoke", "KUBEINFER_RESYNC_SECONDS": "5"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubeinfer_operator.main", "--all-namespaces",
                 f"--liveness=http://127.0.0.1:{free_port()}/healthz"], env=env, stdout=out, stderr=out)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def assert_no_failed_pass(self) -> None:
        """Under exactly its RBAC, no reconcile pass may fail (a pass retried later hides a real bug)."""
        text = self.log.read_text(errors="replace")
        assert "reconcile failed" not in text, text[text.index("reconcile failed") - 200:][:3000]


@pytest.fixture(scope="module")
def sole_operator(kubectl: Kubectl) -> Iterator[None]:
    """The chart's operator, which other e2e modules leave running cluster-wide, sleeps through this
    module: what these tests see must be done by this module's operator (and its RBAC) alone."""
    found = kubectl("get", "deployments", "-n", OPERATOR_NAMESPACE, "-l", CHART_PODS, "-o", "name", check=False)
    deployments = found.stdout.split() if found.returncode == 0 else []
    running = kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", CHART_PODS, "-o", "name", check=False)
    assert deployments or not running.stdout.strip(), f"the chart's operator is not a Deployment: {running.stdout}"
    for deployment in deployments:
        kubectl("scale", deployment, "-n", OPERATOR_NAMESPACE, "--replicas=0")
    if deployments:
        kubectl("wait", "--for=delete", "pods", "-n", OPERATOR_NAMESPACE, "-l", CHART_PODS, "--timeout=90s",
                check=False, timeout=120)
        assert not kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", CHART_PODS, "-o", "name").stdout.strip()
    yield
    for deployment in deployments:
        kubectl("scale", deployment, "-n", OPERATOR_NAMESPACE, "--replicas=1")


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane, crd: None, kubectl: Kubectl, sole_operator: None,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator under a ServiceAccount bound to exactly kubeinfer_operator.permissions, and under the
    chart's operator-scope admission policy (it may change only its own objects)."""
    ns, name = f"kubeinfer-{uuid.uuid4().hex[:5]}", "kubeinfer-operator"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": ns},
            "rules": NAMESPACED_RULES + CLUSTER_RULES}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ns},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]}
    kubectl("create", "namespace", ns)
    kubectl("create", "serviceaccount", name, "-n", ns)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    policy = policies.render(str(binary("helm")), policies.OPERATOR_SCOPE, ns, ns, f"serviceAccount.name={name}")
    kubectl("apply", "-f", "-", input=policy)
    policies.wait_until_enforced(kubectl, f"system:serviceaccount:{ns}:{name}", ns)
    process = OperatorProcess(control_plane.kubeconfig_for_serviceaccount(ns, name),
                              tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    yield process
    process.stop()
    print(log_tail(process.log, 80))
    kubectl("delete", "clusterrolebinding,clusterrole", ns, "--ignore-not-found")
    kubectl("delete", "--ignore-not-found", "-f", "-", input=policy)
    kubectl("delete", "namespace", ns, "--wait=false")


def job_status(admin: Kube, ns: str, name: str) -> dict[str, Any]:
    return (admin.get("DistributedInference", ns, name) or {}).get("status") or {}


def wait_state(admin: Kube, ns: str, name: str, state: str, operator: OperatorProcess) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        assert operator.alive(), log_tail(operator.log, 60)
        status = job_status(admin, ns, name)
        return status if status.get("state") == state else None

    found: dict[str, Any] = wait_for(check, f"{ns}/{name} state {state}", TIMEOUT)
    return found


def worker_pods(admin: Kube, ns: str, job: str) -> list[dict[str, Any]]:
    return admin.list("Pod", ns, selector(job, "worker"))


def pods_of_attempt(admin: Kube, ns: str, job: str, attempt: int, count: int) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        pods = [p for p in worker_pods(admin, ns, job) if not p["metadata"].get("deletionTimestamp")]
        ok = len(pods) == count and all(p["metadata"]["annotations"][ATTEMPT_ANNOTATION] == str(attempt)
                                        for p in pods)
        return pods if ok else None

    found: list[dict[str, Any]] = wait_for(check, f"{count} pods of attempt {attempt}", TIMEOUT)
    return found


def crash(admin: Kube, pod: dict[str, Any], message: str) -> None:
    """Play the kubelet: the worker container exited 3 and was restarted."""
    term = {"exitCode": 3, "reason": "Error", "message": message,
            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:01:00Z"}
    status = {"phase": "Running", "containerStatuses": [{
        "name": "worker", "image": "kubeinfer/runtime:smoke", "imageID": "", "ready": False, "restartCount": 1,
        "state": {"running": {"startedAt": "2026-01-01T00:01:01Z"}}, "lastState": {"terminated": term}}]}
    meta = pod["metadata"]
    admin.patch("Pod", meta["namespace"], meta["name"], {"status": status}, subresource="status")


NO_SCHEDULER = "kubeinfer-e2e-no-scheduler"


def create(admin: Kube, job: JobBuilder) -> None:
    """Workers no scheduler binds: node agents that other modules of the session keep running would run
    them, and an unschedulable pod's scheduler message changes whenever a node comes or goes, which
    rightly rewrites the job's status (the steady-state tests need a steady cluster)."""
    admin.create(job.set("workers.schedulerName", NO_SCHEDULER).obj())


def steady_state_is_not_rewritten(admin: Kube, ns: str, name: str) -> None:
    """Over several resyncs (5 s) with nothing changing, neither the status nor the StatefulSet is written."""
    wait_for(lambda: any(c["type"] == "Created" for c in job_status(admin, ns, name).get("conditions", [])),
             "Created condition", TIMEOUT)
    time.sleep(2)  # let the pass that wrote Created finish its events
    def versions() -> tuple[str, int]:
        job = admin.get("DistributedInference", ns, name) or {}
        sts = admin.get("StatefulSet", ns, f"{name}-workers") or {}
        return job["metadata"]["resourceVersion"], sts["metadata"]["generation"]

    before = versions()
    time.sleep(12)
    assert versions() == before


def test_children_gang_restart_and_max_restarts(admin: Kube, operator: OperatorProcess, namespace: str) -> None:
    create(admin, JobBuilder("cats", namespace).nodes(2).max_restarts(1).ttl(3))
    status = wait_state(admin, namespace, "cats", "Pending", operator)
    wait_for(lambda: any(c["type"] == "Created" for c in job_status(admin, namespace, "cats").get("conditions", [])),
             "Created condition", TIMEOUT)
    for kind, name in [("ConfigMap", "cats-job"), ("ConfigMap", "cats-progress"), ("Service", "cats-workers"),
                       ("ServiceAccount", "cats-worker"), ("Role", "cats-worker"), ("RoleBinding", "cats-worker")]:
        obj = admin.get(kind, namespace, name)
        assert obj is not None, f"{kind} {name} missing"
        assert obj["metadata"]["ownerReferences"][0]["name"] == "cats"
    sts = admin.get("StatefulSet", namespace, "cats-workers")
    assert sts is not None and sts["spec"]["replicas"] == 2 and sts["spec"]["updateStrategy"]["type"] == "OnDelete"
    assert status["plan"]["worldSize"] == 2

    pods = pods_of_attempt(admin, namespace, "cats", 0, 2)
    crash(admin, pods[1], "RendezvousTimeout: cats-workers-0:29500 not reachable")
    pods = pods_of_attempt(admin, namespace, "cats", 1, 2)
    status = job_status(admin, namespace, "cats")
    assert status["restarts"] == 1 and status["attempt"] == 1
    assert status["firstFailure"]["reason"] == "RendezvousTimeout" and status["firstFailure"]["exitCode"] == 3
    assert len(admin.list("StatefulSet", namespace)) == 1

    # The operator restarts now: nothing is lost, nothing is created twice.
    operator.stop()
    operator.start()
    crash(admin, pods[0], "Traceback (most recent call last): CUDA error")
    status = wait_state(admin, namespace, "cats", "Failed", operator)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "MaxRestartsExceeded" and "CUDA error" in failed["message"]
    assert status["restarts"] == 1 and status["firstFailure"]["reason"] == "RendezvousTimeout"
    wait_for(lambda: admin.get("StatefulSet", namespace, "cats-workers") is None, "workers torn down", TIMEOUT)
    wanted = {"ChildrenCreated", "RendezvousTimeout", "MaxRestartsExceeded"}  # posted after the status write
    wait_for(lambda: wanted <= {e["reason"] for e in admin.list("Event", namespace)
                                if e["involvedObject"].get("name") == "cats"}, f"events {wanted}", TIMEOUT)
    # ttlSecondsAfterFinished: 3
    wait_for(lambda: admin.get("DistributedInference", namespace, "cats") is None, "TTL deletion", TIMEOUT)
    operator.assert_no_failed_pass()


def test_suspend_resume_and_completion(admin: Kube, operator: OperatorProcess, namespace: str) -> None:
    # "1024Mi" comes back as "1Gi": the apply step must not see that as a difference.
    create(admin, JobBuilder("dogs", namespace).nodes(1).set("workers.resources", {"limits": {"memory": "1024Mi"}}))
    pods_of_attempt(admin, namespace, "dogs", 0, 1)
    steady_state_is_not_rewritten(admin, namespace, "dogs")
    admin.patch("DistributedInference", namespace, "dogs", {"spec": {"suspend": True}})
    wait_state(admin, namespace, "dogs", "Suspended", operator)
    wait_for(lambda: admin.get("StatefulSet", namespace, "dogs-workers") is None, "workers removed", TIMEOUT)

    admin.patch("DistributedInference", namespace, "dogs", {"spec": {"suspend": False}})
    pods_of_attempt(admin, namespace, "dogs", 1, 1)
    assert job_status(admin, namespace, "dogs")["restarts"] == 0

    report = Progress(attempt=1, phase="complete", total=2, succeeded=2)
    admin.patch("ConfigMap", namespace, "dogs-progress", {"data": encode(report)})
    status = wait_state(admin, namespace, "dogs", "Complete", operator)
    assert status["progress"]["succeeded"] == 2 and status["progress"]["percent"] == 100
    wait_for(lambda: admin.get("StatefulSet", namespace, "dogs-workers") is None
             and admin.get("Service", namespace, "dogs-workers") is None, "workers torn down", TIMEOUT)
    assert admin.get("ConfigMap", namespace, "dogs-progress") is not None
    assert admin.get("DistributedInference", namespace, "dogs") is not None
    operator.assert_no_failed_pass()


def test_pod_deletion_spares_a_successor_with_the_same_name(admin: Kube, namespace: str) -> None:
    """A gang restart deletes the pods it saw; the StatefulSet may already have replaced one by name."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w-0", "namespace": namespace},
           "spec": {"nodeSelector": {"kubeinfer-e2e/no-such-node": "true"},
                    "containers": [{"name": "main", "image": "busybox"}]}}
    seen = admin.create(pod)
    assert admin.delete("Pod", namespace, "w-0", grace_seconds=0, uid=seen["metadata"]["uid"])
    wait_for(lambda: admin.get("Pod", namespace, "w-0") is None, "w-0 gone", TIMEOUT)
    successor = admin.create(pod)
    assert not admin.delete("Pod", namespace, "w-0", grace_seconds=0, uid=seen["metadata"]["uid"])
    still = admin.get("Pod", namespace, "w-0")
    assert still is not None and still["metadata"]["uid"] == successor["metadata"]["uid"]
    assert not still["metadata"].get("deletionTimestamp")


class CountingKube(Kube):
    """The operator's client, counting its requests by method."""

    def __init__(self, kube: Kube) -> None:
        super().__init__(kube.api)
        self.calls: list[str] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(method)
        return super().request(method, url, *args, **kwargs)


def seen_now(admin: Kube, ns: str, job: str) -> Seen:
    """What the operator's watches would hold for the job (read here from the apiserver)."""
    return Seen(pods=worker_pods(admin, ns, job), progress=admin.get("ConfigMap", ns, f"{job}-progress"),
                statefulset=admin.get("StatefulSet", ns, f"{job}-workers"))


def test_a_steady_pass_reads_only_the_job(admin: Kube, operator: OperatorProcess, namespace: str) -> None:
    """Requests per pass bound the operator's scale: children come from the watches and are not
    re-applied while unchanged, yet a child deleted by hand is repaired."""
    operator.stop()  # this test's reconciler is the only one
    try:
        steady_pass_reads_only_the_job(admin, namespace)
    finally:
        operator.start()


def steady_pass_reads_only_the_job(admin: Kube, namespace: str) -> None:
    kube = CountingKube(admin)
    reconciler = Reconciler(kube, Settings(worker_image="kubeinfer/runtime:smoke"))
    create(admin, JobBuilder("ants", namespace).nodes(2))
    reconciler.reconcile(namespace, "ants", Seen())
    first = list(kube.calls)
    # Two GETs: the job, and API discovery of PodGroups (once per process and TTL, not per job).
    assert first.count("POST") >= 7 and first.count("GET") == 2, f"a new job's children are created first: {first}"
    kube.calls.clear()
    create(admin, JobBuilder("bees", namespace).nodes(2))
    reconciler.reconcile(namespace, "bees", Seen())
    assert kube.calls.count("GET") == 1, f"discovery is cached: a second job reads only itself: {kube.calls}"
    for _ in range(2):
        kube.calls.clear()
        reconciler.reconcile(namespace, "ants", seen_now(admin, namespace, "ants"))
    assert kube.calls == ["GET"], "the job itself, and nothing else"
    admin.delete("Service", namespace, "ants-workers")
    digest, _ = reconciler.applied[(namespace, "ants")]
    reconciler.applied[(namespace, "ants")] = (digest, time.monotonic() - REPAIR_SECONDS)  # time for a repair
    reconciler.reconcile(namespace, "ants", seen_now(admin, namespace, "ants"))
    assert admin.get("Service", namespace, "ants-workers") is not None, "a child deleted by hand comes back"


class RoleLastKube(Kube):
    """The operator's own credentials, with every Role create held back a moment."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if method == "POST" and url.endswith("/roles"):
            time.sleep(0.5)
        return super().request(method, url, *args, **kwargs)


def test_worker_rbac_is_created_role_first(operator: OperatorProcess, admin: Kube, namespace: str) -> None:
    """The apiserver refuses a RoleBinding whose Role does not exist yet (it resolves the roleRef to
    check for escalation), so a pass that sends them side by side fails under the operator's RBAC."""
    operator.stop()  # this test's reconciler is the only one
    try:
        kube = RoleLastKube(load_api_client(str(operator.kubeconfig)))
        reconciler = Reconciler(kube, Settings(worker_image="kubeinfer/runtime:smoke"))
        create(admin, JobBuilder("owls", namespace).nodes(1))
        reconciler.reconcile(namespace, "owls", Seen())
        assert admin.get("RoleBinding", namespace, "owls-worker") is not None
        assert admin.get("StatefulSet", namespace, "owls-workers") is not None
    finally:
        operator.start()
