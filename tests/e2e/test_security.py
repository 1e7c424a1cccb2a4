"""Security enforced by the apiserver: restricted worker pods, a NetworkPolicy per job.

No worker runs here (server-side dry runs, jobs pinned to no node): the test_jobs examples run to
Complete in a namespace that enforces `restricted`; this module says in seconds which rule breaks.
NetworkPolicy enforcement needs a CNI: tests/e2e/kindonly (kind only).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from unit.builders import JobBuilder

from e2e.support import policies
from e2e.support.cluster import OPERATOR_NAMESPACE, RELEASE, Cluster, Manifest, job_manifest, wait_for
from e2e.support.policies import CACHE_HOST_DIR
from kubeinfer_api.naming import workers
from kubeinfer_operator.builders import build_statefulset

pytestmark = pytest.mark.e2e
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
VIOLATION = 'violates PodSecurity "restricted:latest"'


@pytest.fixture(scope="module")
def restricted_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"restricted-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    cluster.kubectl("label", "namespace", name, RESTRICTED)
    yield name
    cluster.delete_namespace(name)


def dry_run(cluster: Cluster, namespace: str, manifest: Manifest) -> tuple[bool, str]:
    """Server-side dry-run create: (accepted, error message)."""
    result = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-o", "name", "-f", "-",
                             input=json.dumps(manifest), check=False)  # fmt: skip
    return result.returncode == 0, result.stderr


def worker_pod(job: JobBuilder, namespace: str) -> Manifest:
    """The pod the StatefulSet controller would create from the operator's template."""
    template = build_statefulset(job.ref(), job.spec(), "kubeinfer/kubeinfer-runtime:e2e", 0)["spec"]["template"]
    # The job's ServiceAccount does not exist here (no operator made it); Pod Security ignores the account.
    spec = {**template["spec"], "serviceAccountName": "default"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "name": f"{job.ref().name}-workers-0", "namespace": namespace},
            "spec": spec}


@pytest.mark.parametrize("job", [
    JobBuilder("plain").nodes(2),
    JobBuilder("gpus").gpus(2).set("workers.volumes", [{"name": "m", "persistentVolumeClaim": {"claimName": "m"}}])
    .set("workers.volumeMounts", [{"name": "m", "mountPath": "/models", "readOnly": True}]),
    JobBuilder("cached").set("model.cache", {"claimName": "model-cache"}),
], ids=["plain", "gpu-with-pvc", "pvc-model-cache"])
def test_worker_pods_meet_the_restricted_standard(cluster: Cluster, restricted_namespace: str, job: JobBuilder) -> None:
    accepted, message = dry_run(cluster, restricted_namespace, worker_pod(job, restricted_namespace))
    assert accepted, message


@pytest.mark.parametrize(("change", "rule"), [
    (lambda pod: pod["spec"]["containers"][0]["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    (lambda pod: pod["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
], ids=["root", "hostPath"])
def test_the_namespace_enforces_restricted(
    cluster: Cluster, restricted_namespace: str, change: Any, rule: str
) -> None:
    """The check above can fail: a worker pod with one restricted rule broken is refused."""
    pod = copy.deepcopy(worker_pod(JobBuilder("broken"), restricted_namespace))
    change(pod)
    accepted, message = dry_run(cluster, restricted_namespace, pod)
    assert not accepted and VIOLATION in message and rule in message, message


def test_a_hostpath_model_cache_cannot_be_restricted(cluster: Cluster, restricted_namespace: str) -> None:
    """What docs/operations/security.md says: a node directory as model cache needs a laxer namespace."""
    job = JobBuilder("hostcache").set("model.cache", {"hostPath": "/var/cache/kubeinfer-models"})
    accepted, message = dry_run(cluster, restricted_namespace, worker_pod(job, restricted_namespace))
    assert not accepted and VIOLATION in message, message
    assert 'volume "model-cache" uses restricted volume type "hostPath"' in message, message


def unscheduled_job(name: str, cache: Manifest | None = None, **workers_fields: Any) -> Manifest:
    """A job whose workers no node takes: the operator creates every child, nothing runs."""
    model = {"uri": "s3://models/tiny-flux", **({"cache": cache} if cache else {})}
    spec = {"model": model, "inputs": {"prompts": ["a"]},
            "output": {"uri": f"s3://outputs/{name}/"},
            "workers": {"nodeSelector": {"kubeinfer-e2e/no-such-node": "true"}, **workers_fields}}
    return job_manifest(name, spec)


def test_each_job_gets_a_network_policy_unless_turned_off(operator: Cluster, job_namespace: str) -> None:
    """Made by the chart's operator under the chart's RBAC, and accepted by the apiserver's schema."""
    operator.apply(unscheduled_job("fenced"), job_namespace)
    operator.apply(unscheduled_job("open", networkPolicy=False), job_namespace)
    policy = wait_for(lambda: operator.get("networkpolicy", workers("fenced"), job_namespace),
                      "the NetworkPolicy of job fenced", 60)
    pods = policy["spec"]["podSelector"]["matchLabels"]
    assert pods == {"kubeinfer.io/job-name": "fenced", "kubeinfer.io/component": "worker"}
    assert policy["spec"]["ingress"][0] == {"from": [{"podSelector": {"matchLabels": pods}}]}
    wait_for(lambda: operator.get("statefulset", workers("open"), job_namespace), "the workers of job open", 60)
    assert operator.get("networkpolicy", workers("open"), job_namespace) is None


# ---------------------------------------------------------------- what the operator may change (operator scope)

OPERATOR = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}"
SCOPE_DENIED = "kubeinfer operator scope"
LABEL = json.dumps({"metadata": {"labels": {"kubeinfer.io/job-name": "x",
                                            "app.kubernetes.io/managed-by": "kubeinfer-operator"}}})


def event_about(kind: str, api_version: str, name: str, namespace: str) -> str:
    involved = {"apiVersion": api_version, "kind": kind, "name": name, "namespace": namespace}
    meta = {"generateName": "probe.", "namespace": namespace}
    return json.dumps({"apiVersion": "v1", "kind": "Event", "metadata": meta, "involvedObject": involved,
                       "reason": "Probe", "message": "probe", "type": "Normal"})


def test_the_operator_may_change_only_its_own_objects(operator: Cluster, job_namespace: str) -> None:
    """Its RBAC allows every call below (cluster-wide ConfigMaps, Services, ...); the policy decides."""
    operator.apply(unscheduled_job("mine"), job_namespace)
    wait_for(lambda: operator.get("networkpolicy", workers("mine"), job_namespace), "the children of job mine", 60)
    operator.kubectl("create", "service", "clusterip", "theirs", "--tcp=80:80", "-n", job_namespace)
    ns = ["-n", job_namespace]
    cases = [  # (what, kubectl args, allowed, stdin)
        ("patch kube-system's ConfigMap", ["patch", "configmap", "kube-root-ca.crt", "-n", "kube-system",
                                           "--type=merge", "-p", '{"data": {"x": "y"}}'], False, None),
        ("claim it by labelling it", ["patch", "configmap", "kube-root-ca.crt", "-n", "kube-system",
                                      "--type=merge", "-p", LABEL], False, None),
        ("delete someone's Service", ["delete", "service", "theirs", *ns], False, None),
        ("create an unowned ConfigMap", ["create", "configmap", "loose", *ns], False, None),
        ("post an event about a Pod", ["create", "-f", "-", *ns], False,
         event_about("Pod", "v1", "anything", job_namespace)),
        ("patch the job's ConfigMap", ["patch", "configmap", "mine-job", *ns, "--type=merge",
                                       "-p", '{"metadata": {"annotations": {"x": "y"}}}'], True, None),
        ("delete the job's Service", ["delete", "service", workers("mine"), *ns], True, None),
        ("patch the job itself", ["patch", "dinf", "mine", *ns, "--type=merge",
                                  "-p", '{"metadata": {"annotations": {"x": "y"}}}'], True, None),
        ("post an event about the job", ["create", "-f", "-", *ns], True,
         event_about("DistributedInference", "kubeinfer.io/v1alpha1", "mine", job_namespace)),
    ]
    assert operator.kubectl("auth", "can-i", "patch", "configmaps", "-n", "kube-system", f"--as={OPERATOR}",
                            check=False).stdout.strip() == "yes", "RBAC should allow it: the policy must refuse it"
    wrong = []
    for what, args, allowed, stdin in cases:
        result = operator.kubectl(*args, "--dry-run=server", f"--as={OPERATOR}", input=stdin, check=False)
        refused_by_policy = result.returncode != 0 and SCOPE_DENIED in result.stderr
        if (result.returncode == 0) != allowed or (not allowed and not refused_by_policy):
            wrong.append(f"{what}: rc={result.returncode} {result.stderr.strip()}")
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- what a job author may ask for (job authors)

def author_dry_run(cluster: Cluster, namespace: str, name: str, cache: Manifest | None = None,
                   **workers_fields: Any) -> tuple[bool, str]:
    return dry_run(cluster, namespace, unscheduled_job(name, cache, **workers_fields))


def test_hostpath_volumes_are_refused_naming_the_field(operator: Cluster, job_namespace: str) -> None:
    """The chart's default job-author policy: no hostPath, refused before any pod exists."""
    volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
               {"name": "host", "hostPath": {"path": "/var/run"}}]
    accepted, message = author_dry_run(operator, job_namespace, "hosty", volumes=volumes)
    assert not accepted and "spec.workers.volumes[1].hostPath: hostPath volumes are not allowed" in message, message
    accepted, message = author_dry_run(operator, job_namespace, "pvc", volumes=volumes[:1])
    assert accepted, message


@pytest.mark.parametrize(("path", "allowed"), [
    (f"{CACHE_HOST_DIR}/models", True),
    (str(CACHE_HOST_DIR), True),
    ("/etc", False),
    (f"{CACHE_HOST_DIR}/../../../etc", False),
    (f"{CACHE_HOST_DIR}-evil", False),
], ids=["below-allowed", "allowed", "elsewhere", "dot-dot", "sibling-prefix"])
def test_a_hostpath_model_cache_must_be_a_directory_the_admin_allows(
    operator: Cluster, job_namespace: str, path: str, allowed: bool
) -> None:
    """The e2e install lists CACHE_HOST_DIR (policies.jobAuthors.allowedCacheHostPaths); nothing else passes."""
    accepted, message = author_dry_run(operator, job_namespace, "cachey", cache={"hostPath": path})
    if allowed:
        assert accepted, message
    else:
        assert not accepted and f"spec.model.cache.hostPath: {path} is not an allowed model cache directory" in message
        assert "spec.model.cache.claimName" in message, "the message names the fix"
    accepted, message = author_dry_run(operator, job_namespace, "claimy", cache={"claimName": "models"})
    assert accepted, message


def test_image_prefixes_and_volume_types_are_configurable(operator: Cluster, job_namespace: str) -> None:
    """A second release's policy, bound to this namespace only (its namespaced mode)."""
    sets = ["policies.jobAuthors.allowedImagePrefixes={registry.local/}",
            "policies.jobAuthors.forbiddenVolumeTypes={secret}", f"watchNamespaces={{{job_namespace}}}"]
    policy = policies.render(operator.backend.helm_bin, policies.JOB_AUTHORS, "authors", job_namespace, *sets)
    operator.kubectl("apply", "-f", "-", input=policy)
    try:
        wait_for(lambda: not author_dry_run(operator, job_namespace, "evil", image="evil.io/miner:1")[0],
                 "the job-author policy in force", 60)
        accepted, message = author_dry_run(operator, job_namespace, "evil", image="evil.io/miner:1")
        assert "spec.workers.image: evil.io/miner:1 is not allowed in this cluster" in message, message
        assert "registry.local/" in message, "the message names the allowed prefixes"
        accepted, message = author_dry_run(operator, job_namespace, "good", image="registry.local/kubeinfer-runtime:1")
        assert accepted, message
        accepted, message = author_dry_run(operator, job_namespace, "secretive",
                                           volumes=[{"name": "s", "secret": {"secretName": "s3-credentials"}}])
        assert not accepted and "spec.workers.volumes[0].secret: secret volumes are not allowed" in message, message
    finally:
        operator.kubectl("delete", "--ignore-not-found", "-f", "-", input=policy)
