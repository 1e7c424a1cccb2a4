"""The chart's admission policies and worker NetworkPolicy settings, as rendered by the pinned helm.

What the policies' CEL does is tested by the apiserver (tests/e2e/test_security.py); here: who they
bind to, the toggles, the values schema, and that every child the operator builds is one the
operator-scope policy lets it manage.
"""

from __future__ import annotations

from typing import Any

import pytest
from unit.builders import JobBuilder
from unit.test_chart import CHART, NAMESPACE, RELEASE, env_of, helm, only, render, template

from kubeinfer_api.naming import JOB_LABEL
from kubeinfer_api.plan import build_plan
from kubeinfer_operator.builders import (
    build_job_configmap,
    build_network_policy,
    build_progress_configmap,
    build_service,
    build_statefulset,
    build_worker_rbac,
)

VAP, BINDING = "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"
FULLNAME = f"{RELEASE}-kubeinfer"


def policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Policies by name suffix ("operator-scope", "job-authors"), each checked to have its binding."""
    bindings = {d["spec"]["policyName"]: d for d in docs if d["kind"] == BINDING}
    out = {}
    for policy in (d for d in docs if d["kind"] == VAP):
        name = policy["metadata"]["name"]
        assert bindings[name]["spec"]["validationActions"] == ["Deny"], name
        out[name.removeprefix(f"{FULLNAME}-")] = policy
    assert len(bindings) == len(out), "a binding without its policy"
    return out


def test_both_policies_are_on_by_default_and_can_be_turned_off() -> None:
    assert set(policies(render())) == {"operator-scope", "job-authors"}
    assert set(policies(render("policies.operatorScope=false"))) == {"job-authors"}
    assert set(policies(render("policies.jobAuthors.enabled=false"))) == {"operator-scope"}
    nothing = ("policies.jobAuthors.forbiddenVolumeTypes=null",)
    assert set(policies(render(*nothing))) == {"operator-scope"}, "a policy with no rule is not rendered"


@pytest.mark.parametrize("sets", [(), ("serviceAccount.create=false", "serviceAccount.name=platform-operator")])
def test_operator_scope_binds_to_the_operators_service_account(sets: tuple[str, ...]) -> None:
    docs = render(*sets)
    [subject] = only(docs, "ClusterRoleBinding")["subjects"]
    [condition] = policies(docs)["operator-scope"]["spec"]["matchConditions"]
    user = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
    assert condition["expression"] == f'request.userInfo.username == "{user}"'
    assert subject["namespace"] == NAMESPACE


def test_operator_scope_covers_every_write_to_every_resource() -> None:
    [rule] = policies(render())["operator-scope"]["spec"]["matchConstraints"]["resourceRules"]
    assert rule["operations"] == ["CREATE", "UPDATE", "DELETE"]
    assert rule["apiGroups"] == rule["apiVersions"] == ["*"] and rule["resources"] == ["*/*"]
    assert policies(render())["operator-scope"]["spec"]["failurePolicy"] == "Fail"


def test_every_child_is_one_the_operator_scope_policy_lets_the_operator_manage() -> None:
    """The policy's `isChild` in Python: both labels and a DistributedInference controller owner."""
    variables = {v["name"]: v["expression"] for v in policies(render())["operator-scope"]["spec"]["variables"]}
    assert "'kubeinfer.io/job-name' in object.metadata.labels" in variables["isChild"]
    assert "object.metadata.labels['app.kubernetes.io/managed-by'] == 'kubeinfer-operator'" in variables["isChild"]
    job = JobBuilder()
    ref, spec = job.ref(), job.spec()
    children = [build_job_configmap(ref, spec, build_plan(spec)), build_progress_configmap(ref),
                build_service(ref, spec), build_network_policy(ref, spec, {}), *build_worker_rbac(ref),
                build_statefulset(ref, spec, "img", 0)]
    for child in children:
        meta = child["metadata"]
        assert meta["labels"][JOB_LABEL] and meta["labels"]["app.kubernetes.io/managed-by"] == "kubeinfer-operator"
        assert any(r["kind"] == "DistributedInference" and r["apiVersion"].startswith("kubeinfer.io/")
                   and r["controller"] for r in meta["ownerReferences"]), child["kind"]
    pod = build_statefulset(ref, spec, "img", 0)["spec"]["template"]["metadata"]["labels"]
    assert pod[JOB_LABEL] and pod["app.kubernetes.io/managed-by"] == "kubeinfer-operator", "pods are deleted by label"


def test_job_author_rules_follow_the_values() -> None:
    default = policies(render())["job-authors"]["spec"]
    hostpath_volumes, cache_dir = (v["expression"] for v in default["validations"])
    assert hostpath_volumes == "variables.volumes.all(v, !has(v.hostPath))"
    assert "[].exists(d" in cache_dir, "no hostPath model cache unless the admin lists its directory"
    assert all("matchResources" not in d["spec"] for d in render() if d["kind"] == BINDING), "cluster-wide"
    docs = render("policies.jobAuthors.allowedImagePrefixes={ghcr.io/acme/,registry.local/}",
                  "policies.jobAuthors.forbiddenVolumeTypes={hostPath,secret}", "watchNamespaces={team-a}")
    rules = [v["expression"] for v in policies(docs)["job-authors"]["spec"]["validations"]]
    assert rules[0] == ("variables.image == '' || "
                        '["ghcr.io/acme/","registry.local/"].exists(p, variables.image.startsWith(p))')
    assert rules[1:3] == [f"variables.volumes.all(v, !has(v.{kind}))" for kind in ("hostPath", "secret")]
    assert len(rules) == 4 and '["/var/cache/models"].exists(d' in render_cache_rule("/var/cache/models")
    no_hostpath_ban = policies(render("policies.jobAuthors.forbiddenVolumeTypes={secret}"))["job-authors"]["spec"]
    assert len(no_hostpath_ban["validations"]) == 1, "hostPath allowed: the cache directory is not checked either"
    binding = next(d for d in docs if d["kind"] == BINDING and d["spec"]["policyName"].endswith("job-authors"))
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a"]}]


def render_cache_rule(*directories: str) -> str:
    docs = render(f"policies.jobAuthors.allowedCacheHostPaths={{{','.join(directories)}}}")
    return str(policies(docs)["job-authors"]["spec"]["validations"][-1]["expression"])


def test_worker_metrics_scrapers_reach_the_operator() -> None:
    assert "KUBEINFER_METRICS_SCRAPERS" not in env_of(render())
    env = env_of(render("workerNetworkPolicy.metricsNamespaceLabels.team=monitoring",
                        "workerNetworkPolicy.metricsNamespaceLabels.tier=obs"))
    assert env["KUBEINFER_METRICS_SCRAPERS"] == "team=monitoring,tier=obs"


@pytest.mark.parametrize(("value", "message"), [
    ("policies.jobAuthors.forbiddenVolumeTypes={hostpath}", "forbiddenVolumeTypes/0"),
    ("policies.jobAuthors.allowedImagePrefixes={a'b}", "allowedImagePrefixes/0"),
    ("policies.operatorscope=false", "additional properties 'operatorscope' not allowed"),
    ("policies.jobAuthors.allowedCacheHostPaths={var/cache}", "allowedCacheHostPaths/0"),
    ("policies.jobAuthors.allowedCacheHostPaths={/var/cache/../../etc}", "allowedCacheHostPaths/0"),
    ("workerNetworkPolicy.metricsNamespaceLabels.team=a\\,b", "metricsNamespaceLabels/team"),
])
def test_policy_values_are_checked(value: str, message: str) -> None:
    result = template(value)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_kubernetes_before_1_30_is_refused() -> None:
    """admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy is GA from 1.30."""
    result = helm("template", RELEASE, str(CHART), "--kube-version", "v1.29.9")
    assert result.returncode != 0 and "kubeVersion" in result.stderr
