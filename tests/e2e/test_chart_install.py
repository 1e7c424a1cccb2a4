"""`helm install` of charts/kubeinfer: the operator runs as a pod with the chart's RBAC and nothing more.

On the local cluster the node agent runs the image's entrypoint (`kubeinfer-operator`) from the
project's venv, with in-cluster config from the pod's ServiceAccount token; on kind it is the image.
The module ends with `helm uninstall`, and installs the release again before it lets other tests run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from e2e.support.cluster import CHART, OPERATOR_NAMESPACE, RELEASE, Cluster, wait_for
from e2e.support.fixtures import ensure_operator
from e2e.support.jobs import fault_job, launch
from kubeinfer_api import GROUP, PLURAL

# Installs, upgrades and uninstalls the shared release: nothing else may run meanwhile.
pytestmark = [pytest.mark.e2e, pytest.mark.serial, pytest.mark.xdist_group("chart")]
CRD = f"{PLURAL}.{GROUP}"
OPERATOR_SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}"

# (verb, resource, allowed): what the operator's ServiceAccount may do in a user's namespace.
PERMISSIONS = [
    ("create", "statefulsets.apps", True),
    ("delete", "pods", True),
    ("patch", "distributedinferences.kubeinfer.io/status", True),
    ("delete", "distributedinferences.kubeinfer.io", True),  # ttlSecondsAfterFinished
    ("create", "roles.rbac.authorization.k8s.io", True),
    ("create", "pods", False),  # workers come from the StatefulSet, never from the operator
    ("get", "secrets", False),  # credentials reach pods by reference, the operator never reads them
    ("update", "deployments.apps", False),
    ("delete", "nodes", False),
    ("create", "clusterroles.rbac.authorization.k8s.io", False),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", False),
]


@pytest.fixture(scope="module", autouse=True)
def _shared_release_restored(nodes: Cluster) -> Iterator[None]:
    """Put the shared release back before the module's exclusive hold ends: a test elsewhere that waits for
    its jobs while holding the cluster (shared) would otherwise wait for an operator nobody installs (seen:
    every worker stuck until pytest's timeout)."""
    yield
    ensure_operator(nodes)


def _can(cluster: Cluster, verb: str, resource: str, namespace: str) -> bool:
    result = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={OPERATOR_SA}", check=False)
    return result.stdout.strip() == "yes"


def _proxy_get(cluster: Cluster, pod: dict[str, object], port: int, path: str) -> str:
    """GET a pod's port through the apiserver proxy (works wherever the apiserver reaches pods)."""
    meta = pod["metadata"]
    assert isinstance(meta, dict)
    url = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}:{port}/proxy{path}"
    return cluster.kubectl("get", "--raw", url).stdout


def test_chart_installs_crd_and_a_running_operator(operator: Cluster) -> None:
    crd = operator.get("crd", CRD)
    assert crd is not None, "the chart did not install the CRD"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established["Established"] == "True"
    pod = operator.wait_operator_running()
    assert pod["spec"]["serviceAccountName"] == RELEASE
    assert operator.get("deployment", RELEASE, OPERATOR_NAMESPACE) is not None


def test_operator_has_the_charts_rbac_and_nothing_more(operator: Cluster, job_namespace: str) -> None:
    granted = {(verb, resource): _can(operator, verb, resource, job_namespace) for verb, resource, _ in PERMISSIONS}
    assert granted == {(verb, resource): allowed for verb, resource, allowed in PERMISSIONS}
    rules = operator.kubectl("auth", "can-i", "--list", "-n", job_namespace, f"--as={OPERATOR_SA}").stdout
    assert "[*]" not in rules, f"wildcard permission granted:\n{rules}"


def test_liveness_and_metrics_endpoints_answer(operator: Cluster) -> None:
    pod = operator.wait_operator_running()
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    health = _proxy_get(operator, pod, ports["health"], "/healthz")
    assert health.strip(), "empty liveness answer"
    metrics = _proxy_get(operator, pod, ports["metrics"], "/metrics")
    assert "kubeinfer_" in metrics, metrics[:500]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    assert restarts == 0, "the liveness probe (or a crash) restarted the operator"


# Labelled and owned like a job's children, so only RBAC (not the operator-scope policy) decides.
CHILD_METADATA = """metadata:
  name: job-worker
  namespace: {ns}
  labels: {{app.kubernetes.io/managed-by: kubeinfer-operator, kubeinfer.io/job-name: job}}
  ownerReferences: [{{apiVersion: kubeinfer.io/v1alpha1, kind: DistributedInference, name: job,
                      uid: 00000000-0000-0000-0000-000000000001, controller: true}}]"""
WORKER_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
{meta}
rules: [{{apiGroups: [""], resources: [configmaps], resourceNames: [job-progress], verbs: [get, patch]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
{meta}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: job-worker}}
subjects: [{{kind: ServiceAccount, name: job-worker, namespace: {ns}}}]
"""


def worker_rbac(namespace: str) -> str:
    return WORKER_RBAC.format(meta=CHILD_METADATA.format(ns=namespace), ns=namespace)


def test_namespaced_install_scopes_the_operator(operator: Cluster, job_namespace: str) -> None:
    """watchNamespaces: the operator may act (and grant the worker Role) only in the namespaces it watches."""
    watched, other = (f"{prefix}-{uuid.uuid4().hex[:5]}" for prefix in ("watched", "other"))
    release = f"ki-{uuid.uuid4().hex[:5]}"
    for name in (watched, other):
        operator.kubectl("create", "namespace", name)
    try:
        values = [arg for pair in operator.backend.chart_values() for arg in ("--set", pair)]
        scope = f"watchNamespaces={{{watched}}}"
        operator.helm("install", release, str(CHART), "-n", job_namespace, "--set", scope, *values)
        account = f"--as=system:serviceaccount:{job_namespace}:{release}-kubeinfer"

        def applied() -> bool:
            """The RoleBinding's escalation check reads the Role from the apiserver's RBAC cache, which can lag
            the Role created a moment before ("rolebindings ... not found"); anything else is a failure."""
            result = operator.kubectl("apply", account, "-f", "-", input=worker_rbac(watched), check=False)
            assert result.returncode == 0 or "not found" in result.stderr, result.stderr
            return result.returncode == 0

        wait_for(applied, "the operator's account to create the worker Role and RoleBinding", 30, interval=1)
        denied = operator.kubectl("apply", account, "-f", "-", input=worker_rbac(other), check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr and "operator scope" not in denied.stderr

        def can(*args: str) -> bool:
            return operator.kubectl("auth", "can-i", account, *args, check=False).stdout.strip() == "yes"

        assert can("create", "statefulsets.apps", "-n", watched) and not can("create", "statefulsets.apps", "-n", other)
        assert can("watch", "nodes") and not can("delete", "nodes") and not can("get", "secrets", "-n", watched)
        operator.helm("uninstall", release, "-n", job_namespace, "--wait")
        assert operator.get("crd", CRD) is not None
    finally:
        for name in (watched, other):
            operator.delete_namespace(name)


def test_helm_upgrade_keeps_the_crd_and_running_jobs(
    operator: Cluster, job_namespace: str, tiny_models: object
) -> None:
    crd_uid = operator.get("crd", CRD)["metadata"]["uid"]  # type: ignore[index]
    job = launch(operator, job_namespace, fault_job("upgraded", job_namespace))
    operator.wait_job(job, job_namespace, lambda j: j.get("status", {}).get("progress", {}).get("succeeded", 0) >= 1,
                      "first item committed", 300)  # fmt: skip
    job_uid = operator.job(job, job_namespace)["metadata"]["uid"]
    operator.install_operator("operator.logLevel=debug", upgrade=True)
    assert operator.get("crd", CRD)["metadata"]["uid"] == crd_uid  # type: ignore[index]
    finished = operator.wait_condition(job, job_namespace, "Complete", 600)
    assert finished["metadata"]["uid"] == job_uid


def test_helm_uninstall_keeps_the_crd_and_the_jobs(operator: Cluster, job_namespace: str) -> None:
    job = fault_job("kept", job_namespace)
    job["spec"]["suspend"] = True
    name = launch(operator, job_namespace, job)
    operator.helm("uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait")
    assert operator.get("crd", CRD) is not None, "helm uninstall deleted the CRD (and every job with it)"
    assert operator.job(name, job_namespace)["spec"]["suspend"] is True
    listed = json.loads(operator.kubectl("get", "deployments", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)
    assert listed["items"] == []
