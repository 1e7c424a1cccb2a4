"""The Helm chart: `helm lint` and the rendered manifests for each important toggle.

Runs the pinned helm that `hack/build-tools.sh` builds (`make tools`); a missing binary fails with
that fix instead of skipping, so a chart that was never rendered cannot look like a passing one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeinfer_operator.permissions import CLUSTER_RULES, NAMESPACED_RULES
from localcluster.binaries import binary, read_versions

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubeinfer"
RELEASE, NAMESPACE = "ki", "kubeinfer-system"
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding"}
RBAC_KINDS = CLUSTER_KINDS | {"Role", "RoleBinding"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}

def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm; the caller checks the return code."""
    return subprocess.run([str(binary("helm")), *args], capture_output=True, text=True, timeout=60)


def template(*sets: str, include_crds: bool = False) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart as an install on the pinned Kubernetes version would see it."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", read_versions()["KUBERNETES_VERSION"]]
    args += [arg for value in sets for arg in ("--set", value)]
    return helm(*args, *(["--include-crds"] if include_crds else []))


def render(*sets: str, include_crds: bool = False) -> list[dict[str, Any]]:
    result = template(*sets, include_crds=include_crds)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in operator_container(docs)["env"]}


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the rules grant, so rule lists compare however they are grouped."""
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
            for v in rule["verbs"]}


def test_lint_strict_passes() -> None:
    for extra in ([], ["--set", "watchNamespaces={a,b}", "--set", "metrics.serviceMonitor.enabled=true"]):
        result = helm("lint", "--strict", str(CHART), *extra)
        assert result.returncode == 0, result.stdout + result.stderr


def test_default_render_runs_one_restricted_operator() -> None:
    docs = render()
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment",
                                         "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    deployment = only(docs, "Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(docs)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert "readinessProbe" not in container
    assert container["image"] == "ghcr.io/kubeinfer/kubeinfer-operator:0.1.0"


def test_liveness_probe_targets_kopf_liveness_endpoint() -> None:
    container = operator_container(render("operator.healthPort=8181"))
    assert "--liveness=http://0.0.0.0:8181/healthz" in container["args"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == 8181


def test_operator_env_carries_worker_image_and_metrics_port() -> None:
    env = env_of(render())
    assert env["KUBEINFER_WORKER_IMAGE"] == "ghcr.io/kubeinfer/kubeinfer-runtime:0.1.0"
    assert env["KUBEINFER_METRICS_PORT"] == "9090"
    assert "KUBEINFER_NAMESPACES" not in env, "cluster-wide mode must not restrict namespaces"
    env = env_of(render("workerImage.repository=registry.local/worker", "workerImage.tag=gpu-1",
                        "metrics.port=9300", "operator.extraEnv[0].name=EXTRA", "operator.extraEnv[0].value=enabled"))
    assert env["KUBEINFER_WORKER_IMAGE"] == "registry.local/worker:gpu-1"
    assert env["KUBEINFER_METRICS_PORT"] == "9300"
    assert env["EXTRA"] == "enabled"


def test_metrics_service_selects_the_operator_port() -> None:
    docs = render("metrics.port=9300")
    service, deployment = only(docs, "Service"), only(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert port["port"] == 9300
    named = {p["name"]: p["containerPort"] for p in operator_container(docs)["ports"]}
    assert named[port["targetPort"]] == 9300


def test_cluster_wide_rbac_grants_exactly_what_the_operator_declares() -> None:
    docs = render()
    role, binding = only(docs, "ClusterRole"), only(docs, "ClusterRoleBinding")
    # Exactly what the operator declares: a missing verb breaks a feature, an extra one is privilege.
    assert grants(role["rules"]) == grants(NAMESPACED_RULES + CLUSTER_RULES)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    sa = only(docs, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}]
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]


def test_namespaced_mode_has_roles_per_namespace_and_no_cluster_write() -> None:
    docs = render("watchNamespaces={team-a,team-b}")
    assert env_of(docs)["KUBEINFER_NAMESPACES"] == "team-a,team-b"
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    sa_name = only(docs, "ServiceAccount")["metadata"]["name"]
    for namespace, role in roles.items():
        assert grants(role["rules"]) == grants(NAMESPACED_RULES), namespace
        assert bindings[namespace]["roleRef"]["name"] == role["metadata"]["name"]
        assert bindings[namespace]["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}]
    cluster_role = only(docs, "ClusterRole")
    assert grants(cluster_role["rules"]) == grants(CLUSTER_RULES)
    for rule in cluster_role["rules"]:
        assert not set(rule["verbs"]) & WRITE_VERBS, f"cluster-wide write in namespaced mode: {rule}"
        assert not {"distributedinferences", "pods", "configmaps", "secrets"} & set(rule["resources"]), rule


@pytest.mark.parametrize("sets", [(), ("watchNamespaces={a,b}",)], ids=["cluster", "namespaced"])
def test_rbac_has_no_wildcards_and_no_secrets(sets: tuple[str, ...]) -> None:
    rules = [rule for d in render(*sets) if d["kind"] in RBAC_KINDS - {"RoleBinding", "ClusterRoleBinding"}
             for rule in d["rules"]]
    assert rules
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"wildcard {key} in {rule}"
        assert "secrets" not in rule["resources"], "the operator never reads Secrets; workers mount them"


def test_rbac_create_false_renders_no_rbac() -> None:
    for sets in [("rbac.create=false",), ("rbac.create=false", "watchNamespaces={a}")]:
        kinds = {d["kind"] for d in render(*sets)}
        assert not kinds & RBAC_KINDS
        assert {"ServiceAccount", "Deployment"} <= kinds


def test_existing_service_account_is_used_and_bound() -> None:
    docs = render("serviceAccount.create=false", "serviceAccount.name=platform-operator")
    assert "ServiceAccount" not in {d["kind"] for d in docs}
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operator"
    assert only(docs, "ClusterRoleBinding")["subjects"][0]["name"] == "platform-operator"


def test_existing_service_account_needs_a_name() -> None:
    result = template("serviceAccount.create=false")
    assert result.returncode != 0
    assert "serviceAccount.name: name an existing ServiceAccount" in result.stderr


def test_service_monitor_toggle() -> None:
    assert "ServiceMonitor" not in {d["kind"] for d in render()}
    docs = render("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom",
                  "metrics.serviceMonitor.interval=15s")
    monitor, service = only(docs, "ServiceMonitor"), only(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["interval"] == "15s"


@pytest.mark.parametrize(("value", "message"), [
    ("image.tagg=1", "additional properties 'tagg' not allowed"),
    ("metrics.serviceMonitor.enable=true", "additional properties 'enable' not allowed"),
    ("rbca.create=false", "additional properties 'rbca' not allowed"),
    ("operator.logLevel=loud", "logLevel"),
    ("watchNamespaces={Team_A}", "watchNamespaces/0"),
    ("metrics.port=80", "metrics/port"),
])
def test_schema_rejects_typos_and_bad_values(value: str, message: str) -> None:
    result = template(value)
    assert result.returncode != 0, f"--set {value} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_schema_closes_every_object() -> None:
    """`additionalProperties: false` wherever the schema lists properties, so no typo passes."""
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                assert node.get("additionalProperties") is False, f"{path} is open to typos"
            for key, sub in node.items():
                walk(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for index, sub in enumerate(node):
                walk(sub, f"{path}/{index}")

    schema = json.loads((CHART / "values.schema.json").read_text())
    walk(schema, "")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"]), "values.yaml and values.schema.json disagree"


def test_crd_ships_with_the_chart_and_is_kept_on_uninstall() -> None:
    docs = render(include_crds=True)
    crd = only(docs, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    generated = REPO / "crds" / "distributedinferences.kubeinfer.io.yaml"
    assert (CHART / "crds" / generated.name).read_text() == generated.read_text(), "run `make crds`"
    assert crd == yaml.safe_load(generated.read_text())
    assert not list((CHART / "templates").rglob("*crd*")), "the CRD lives only in crds/ (generated)"


def test_old_kubernetes_is_refused() -> None:
    result = helm("template", RELEASE, str(CHART), "--kube-version", "v1.27.0")
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr


# ---------------------------------------------------------------- Dockerfile (cannot be built here: no Docker)

def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Stages by name: base image (global ARGs resolved) and (instruction, arguments) in order."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    args: dict[str, str] = {}
    stages: dict[str, dict[str, Any]] = {}
    current: list[tuple[str, str]] | None = None
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if instruction == "ARG" and current is None:
            key, _, value = rest.partition("=")
            args[key] = value
        elif instruction == "FROM":
            base, _, name = rest.partition(" AS ")
            for key, value in args.items():
                base = base.replace("${" + key + "}", value)
            current = []
            stages[name] = {"base": base, "steps": current}
        elif current is not None:
            current.append((instruction, rest))
    return stages


def steps(stage: dict[str, Any], instruction: str) -> list[str]:
    return [rest for kind, rest in stage["steps"] if kind == instruction]


def pyproject() -> dict[str, Any]:
    import tomllib

    project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project


@pytest.mark.parametrize(("target", "extras", "script"), [
    ("operator", "operator", "kubeinfer-operator"),
    # Every URI scheme the CRD accepts must work in the default worker image.
    ("runtime", "runtime gcs azure", "kubeinfer-worker")])
def test_dockerfile_target_installs_its_extra_and_runs_as_non_root(target: str, extras: str, script: str) -> None:
    stages = dockerfile_stages()
    final, deps = stages[target], stages[f"{target}-deps"]
    assert final["base"] == f"{target}-deps", "the image is its dependency stage plus the project"
    installs = " ".join(steps(deps, "RUN"))
    assert f"image-requirements.py /tmp/deps/pyproject.toml {extras} >" in installs
    assert "pip install" in installs and "-r /tmp/deps/requirements.txt" in installs
    [copy] = steps(final, "COPY")
    assert copy == "--from=wheel /dist /tmp/dist", "only the project's wheel enters on top of the dependencies"
    assert "--no-deps /tmp/dist/*.whl" in " ".join(steps(final, "RUN"))
    assert steps(final, "USER")[-1] == "1000:1000"
    assert steps(final, "ENTRYPOINT") == [f'["{script}"]']
    assert script in pyproject()["scripts"]


def test_dockerfile_final_images_have_no_build_tools() -> None:
    stages = dockerfile_stages()
    for target in ("operator", "runtime"):
        commands = " ".join(steps(stages[target], "RUN") + steps(stages[f"{target}-deps"], "RUN"))
        assert "/opt/venv/bin/pip uninstall --yes --disable-pip-version-check pip" in commands
        for tool in ("build-essential", "gcc", "g++", "make ", "-dev ", "git", "curl", "wget"):
            assert tool not in commands, f"{tool} in the {target} image"
    assert "nvidia/cuda" in stages["runtime-deps"]["base"], "the runtime image needs a CUDA-capable base"


def test_operator_image_has_no_torch_and_runtime_image_no_kopf() -> None:
    project = pyproject()

    def names(requirements: list[str]) -> set[str]:
        return {req.split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower() for req in requirements}

    base, extras = names(project["dependencies"]), project["optional-dependencies"]
    operator, runtime = base | names(extras["operator"]), base | names(extras["runtime"])
    assert {"kopf", "kubernetes", "pydantic"} <= operator and not {"torch", "diffusers", "accelerate"} & operator
    assert {"torch", "diffusers", "accelerate"} <= runtime and "kopf" not in runtime


def test_dockerignore_sends_only_the_packages() -> None:
    rules = [r for r in (REPO / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "**", "everything is excluded first (.venv, .git, caches, outputs)"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    stages = dockerfile_stages()
    copied = {source.rstrip("/") for name in ("wheel", "operator-deps", "runtime-deps")
              for step in steps(stages[name], "COPY") for source in step.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "api", "operator", "runtime", "hack/image-requirements.py"}
    assert copied == included
