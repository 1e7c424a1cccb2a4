"""Manifests the operator creates: env contract, user env wins, GPUs, /dev/shm, security, passthrough."""

from __future__ import annotations

import json
from typing import Any

import pytest
from unit.builders import JobBuilder

from kubeinfer_api.jobconfig import JobConfig
from kubeinfer_api.naming import ATTEMPT_ANNOTATION, JOB_LABEL
from kubeinfer_api.plan import build_plan
from kubeinfer_operator.builders import (
    build_job_configmap,
    build_progress_configmap,
    build_service,
    build_statefulset,
    build_worker_rbac,
)

IMAGE = "registry.local/kubeinfer-runtime:test"


def sts(job: JobBuilder, attempt: int = 0) -> dict[str, Any]:
    return build_statefulset(job.ref(), job.spec(), IMAGE, attempt)


def pod_spec(job: JobBuilder) -> dict[str, Any]:
    spec: dict[str, Any] = sts(job)["spec"]["template"]["spec"]
    return spec


def container(job: JobBuilder) -> dict[str, Any]:
    out: dict[str, Any] = pod_spec(job)["containers"][0]
    return out


def env(job: JobBuilder) -> dict[str, Any]:
    """name -> value, or the valueFrom dict."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


@pytest.mark.parametrize(("job", "expected"), [
    (JobBuilder("cats").nodes(2).gpus(4),
     {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4", "WORLD_SIZE": "8", "PET_MASTER_PORT": "29500"}),
    (JobBuilder("cats").nodes(3),
     {"PET_NNODES": "3", "PET_NPROC_PER_NODE": "1", "WORLD_SIZE": "3"}),
    (JobBuilder("cats").nodes(2).gpus(4).strategy("deviceMap"),
     {"PET_NPROC_PER_NODE": "1", "WORLD_SIZE": "2"}),
    (JobBuilder("cats").nodes(2).processes(2).set("rendezvous.port", 29600),
     {"PET_NPROC_PER_NODE": "2", "WORLD_SIZE": "4", "MASTER_PORT": "29600", "PET_MASTER_PORT": "29600"}),
    (JobBuilder("dogs", "team-a").nodes(2),
     {"MASTER_ADDR": "dogs-workers-0.dogs-workers.team-a.svc",
      "PET_MASTER_ADDR": "dogs-workers-0.dogs-workers.team-a.svc",
      "KUBEINFER_JOB": "dogs", "KUBEINFER_NAMESPACE": "team-a",
      "KUBEINFER_PROGRESS_CONFIGMAP": "dogs-progress", "KUBEINFER_JOB_FILE": "/etc/kubeinfer/job.json"}),
])
def test_env_contract_values(job: JobBuilder, expected: dict[str, str]) -> None:
    got = env(job)
    assert {k: got.get(k) for k in expected} == expected


def test_ranks_and_attempt_come_from_the_downward_api() -> None:
    got = env(JobBuilder().nodes(2))
    index = {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
    assert got["PET_NODE_RANK"] == index and got["NODE_RANK"] == index
    assert got["KUBEINFER_ATTEMPT"] == {"fieldRef": {"fieldPath": f"metadata.annotations['{ATTEMPT_ANNOTATION}']"}}


def test_nccl_defaults_are_bounded_by_the_rendezvous_timeout() -> None:
    got = env(JobBuilder().gpus(1).set("rendezvous.timeoutSeconds", 120))
    assert got["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert got["TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC"] == "120"


@pytest.mark.parametrize(("job", "threads"), [
    (JobBuilder().nodes(2), "1"),  # the default 500m request
    (JobBuilder().set("workers.resources", {"requests": {"cpu": "8"}}).processes(2), "4"),
    (JobBuilder().set("workers.resources", {"requests": {"cpu": "2500m"}, "limits": {"cpu": "16"}}), "2"),
    (JobBuilder().set("workers.resources", {"limits": {"cpu": "3"}}).processes(2), "1"),  # request = limit
    (JobBuilder().set("workers.resources", {"requests": {"cpu": "32"}}).gpus(8), "4"),
    (JobBuilder().set("workers.resources", {"requests": {"cpu": "2"}}).processes(4), "1"),  # never 0
])
def test_each_process_gets_threads_for_its_share_of_the_cpu_request(job: JobBuilder, threads: str) -> None:
    """Not one thread per core of the node: a small pod's ranks would spin-wait on a busy node."""
    assert env(job)["OMP_NUM_THREADS"] == threads


@pytest.mark.parametrize("name", ["WORLD_SIZE", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "MASTER_ADDR", "NCCL_DEBUG",
                                  "OMP_NUM_THREADS"])
def test_user_env_wins_over_injected(name: str) -> None:
    job = JobBuilder().nodes(2).env(name, "mine")
    names = [e["name"] for e in container(job)["env"]]
    assert names.count(name) == 1
    assert env(job)[name] == "mine"


def test_user_env_comes_after_injected_so_references_resolve() -> None:
    job = JobBuilder().env("MY_ADDR", "$(MASTER_ADDR):1234")
    names = [e["name"] for e in container(job)["env"]]
    assert names.index("MY_ADDR") > names.index("MASTER_ADDR")


def test_output_credentials_are_optional_secret_refs_and_endpoint_from_spec_wins() -> None:
    got = env(JobBuilder().output_secret("store", endpoint="http://minio:9000"))
    ref = {"secretKeyRef": {"name": "store", "key": "AWS_ACCESS_KEY_ID", "optional": True}}
    assert got["AWS_ACCESS_KEY_ID"] == ref
    assert got["AWS_ENDPOINT_URL"] == "http://minio:9000"
    names = [e["name"] for e in container(JobBuilder().output_secret("store", "http://m:9000"))["env"]]
    assert names.count("AWS_ENDPOINT_URL") == 1


def test_model_credentials_are_prefixed_so_two_stores_do_not_clash() -> None:
    got = env(JobBuilder().model_secret("models").output_secret("outputs"))
    assert got["KUBEINFER_MODEL_AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "models"
    assert got["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "outputs"
    assert got["HF_TOKEN"]["secretKeyRef"]["name"] == "models"


def test_no_credentials_without_secrets() -> None:
    assert not any(k.startswith(("AWS_", "KUBEINFER_MODEL_", "HF_")) for k in env(JobBuilder()))


DEFAULTS = {"cpu": "500m", "memory": "1Gi"}


@pytest.mark.parametrize(("job", "limits", "requests"), [
    (JobBuilder().gpus(4), {"nvidia.com/gpu": "4"}, {**DEFAULTS, "nvidia.com/gpu": "4"}),
    (JobBuilder(), None, DEFAULTS),
    # gpusPerNode is the truth: a user's own nvidia.com/gpu is replaced, other resources pass through
    (JobBuilder().gpus(2).set("workers.resources", {"limits": {"nvidia.com/gpu": 8, "memory": "64Gi"},
                                                    "requests": {"cpu": 4}}),
     {"nvidia.com/gpu": "2", "memory": "64Gi"}, {"cpu": "4", "nvidia.com/gpu": "2"}),
    # A default request never exceeds a limit the user set: a resource with a limit gets no default.
    (JobBuilder().set("workers.resources", {"limits": {"cpu": "250m"}}), {"cpu": "250m"}, {"memory": "1Gi"}),
    (JobBuilder().set("workers.resources", {"requests": {"memory": "3Gi"}}), None, {"cpu": "500m", "memory": "3Gi"}),
])
def test_gpu_and_default_resources(
    job: JobBuilder, limits: dict[str, str] | None, requests: dict[str, str] | None
) -> None:
    res = container(job)["resources"]
    assert res.get("limits") == limits and res.get("requests") == requests


def test_dev_shm_is_memory_backed_with_the_spec_size() -> None:
    job = JobBuilder().set("workers.shmSize", "16Gi")
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
    assert mounts["/dev/shm"] == "dshm"
    assert mounts["/etc/kubeinfer"] == "job-config"
    assert volumes["job-config"]["configMap"] == {"name": "cats-job"}


def test_restricted_security_context() -> None:
    job = JobBuilder()
    ctx, pod = container(job)["securityContext"], pod_spec(job)["securityContext"]
    assert ctx["runAsNonRoot"] and ctx["runAsUser"] == 1000
    assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"} == pod["seccompProfile"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert pod["runAsNonRoot"] is True


def test_home_and_tmp_are_writable_emptydirs_under_a_read_only_root() -> None:
    job = JobBuilder()
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
    for path in ("/tmp", "/home/kubeinfer"):
        assert volumes[mounts[path]] == {"name": mounts[path], "emptyDir": {}}, path
    assert env(job)["HOME"] == "/home/kubeinfer", "caches (~/.cache, HF_HOME) must land on the emptyDir"
    writable = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"] if not m.get("readOnly")}
    assert set(writable) == {"/tmp", "/home/kubeinfer", "/dev/shm", "/var/cache/kubeinfer/pod"}
    assert all("emptyDir" in volumes[name] for name in writable.values()), "no writable path outlives the pod"


def test_a_user_volume_at_tmp_replaces_ours() -> None:
    job = (JobBuilder().set("workers.volumes", [{"name": "scratch", "emptyDir": {"medium": "Memory"}}])
           .set("workers.volumeMounts", [{"name": "scratch", "mountPath": "/tmp/"}]))
    mounts = [m["mountPath"].rstrip("/") for m in container(job)["volumeMounts"]]
    assert mounts.count("/tmp") == 1 and "/home/kubeinfer" in mounts
    names = [v["name"] for v in pod_spec(job)["volumes"]]
    assert "kubeinfer-tmp" not in names and len(names) == len(set(names))
    assert env(JobBuilder().env("HOME", "/data"))["HOME"] == "/data"


def test_container_basics() -> None:
    c = container(JobBuilder().set("workers.imagePullPolicy", "Always"))
    assert c["command"] == ["kubeinfer-worker"] and c["image"] == IMAGE and c["imagePullPolicy"] == "Always"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "readinessProbe" not in c and "livenessProbe" not in c
    assert container(JobBuilder().image("mine:1"))["image"] == "mine:1"


@pytest.mark.parametrize(("path", "value", "key"), [
    ("workers.nodeSelector", {"gpu": "h100"}, "nodeSelector"),
    ("workers.tolerations", [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}], "tolerations"),
    ("workers.affinity", {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
     "affinity"),
    ("workers.priorityClassName", "batch-high", "priorityClassName"),
    ("workers.schedulerName", "volcano", "schedulerName"),
    ("workers.imagePullSecrets", [{"name": "registry"}], "imagePullSecrets"),
])
def test_pod_passthrough(path: str, value: Any, key: str) -> None:
    assert pod_spec(JobBuilder().set(path, value))[key] == value


def test_absent_passthrough_fields_are_not_set() -> None:
    spec = pod_spec(JobBuilder())
    assert not {"nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName",
                "imagePullSecrets"} & set(spec)


def test_user_volumes_and_mounts_are_added_after_ours() -> None:
    job = (JobBuilder().set("workers.volumes", [{"name": "models", "persistentVolumeClaim": {"claimName": "m"}}])
           .set("workers.volumeMounts", [{"name": "models", "mountPath": "/models"}]))
    assert [v["name"] for v in pod_spec(job)["volumes"]] == ["job-config", "dshm", "model-files",
                                                             "kubeinfer-home", "kubeinfer-tmp", "models"]
    assert container(job)["volumeMounts"][-1] == {"name": "models", "mountPath": "/models"}


def test_pod_labels_and_annotations_pass_through_but_ours_win() -> None:
    job = (JobBuilder().set("workers.podLabels", {"team": "a", JOB_LABEL: "evil"})
           .set("workers.podAnnotations", {"note": "x", ATTEMPT_ANNOTATION: "99"}))
    meta = build_statefulset(job.ref(), job.spec(), IMAGE, 3)["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "a" and meta["labels"][JOB_LABEL] == "cats"
    assert meta["annotations"] == {"note": "x", ATTEMPT_ANNOTATION: "3"}


def test_statefulset_shape() -> None:
    obj = sts(JobBuilder().nodes(3), attempt=2)
    spec = obj["spec"]
    assert obj["metadata"]["name"] == spec["serviceName"] == "cats-workers"
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "OnDelete"}
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert spec["template"]["spec"]["serviceAccountName"] == "cats-worker"
    assert spec["template"]["metadata"]["annotations"][ATTEMPT_ANNOTATION] == "2"


def test_headless_service_publishes_not_ready_addresses() -> None:
    job = JobBuilder().set("rendezvous.port", 29700)
    svc = build_service(job.ref(), job.spec())
    assert svc["metadata"]["name"] == "cats-workers"
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["ports"][0]["port"] == 29700
    assert svc["spec"]["selector"] == sts(job)["spec"]["selector"]["matchLabels"]


def test_worker_rbac_is_limited_to_the_progress_configmap() -> None:
    sa, role, binding = build_worker_rbac(JobBuilder().ref())
    assert sa["kind"] == "ServiceAccount" and sa["metadata"]["name"] == "cats-worker"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": ["cats-progress"], "verbs": ["get", "patch"]}]
    assert binding["roleRef"]["name"] == "cats-worker"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cats-worker", "namespace": "default"}]


def test_job_configmap_round_trips_to_the_runtime_config() -> None:
    job = JobBuilder().nodes(2).strategy("context", ulysses=2)
    cm = build_job_configmap(job.ref(), job.spec(), build_plan(job.spec()))
    config = JobConfig.model_validate(json.loads(cm["data"]["job.json"]))
    assert config.name == "cats" and config.uid == "uid-cats" and config.spec == job.spec()
    assert config.plan.world_size == 2 and config.plan.group_size == 2


def test_progress_configmap_is_created_empty() -> None:
    cm = build_progress_configmap(JobBuilder().ref())
    assert cm["metadata"]["name"] == "cats-progress" and "data" not in cm


def test_every_child_is_owned_by_the_job() -> None:
    job = JobBuilder()
    ref, spec = job.ref(), job.spec()
    children = [build_job_configmap(ref, spec, build_plan(spec)), build_progress_configmap(ref),
                build_service(ref, spec), sts(job), *build_worker_rbac(ref)]
    for child in children:
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == "uid-cats" and owner["controller"] is True, child["kind"]
        assert owner["kind"] == "DistributedInference" and owner["apiVersion"] == "kubeinfer.io/v1alpha1"
        assert child["metadata"]["labels"][JOB_LABEL] == "cats"


def test_workers_get_the_drain_grace_period_and_know_it() -> None:
    job = JobBuilder().set("workers.terminationGracePeriodSeconds", 45)
    assert pod_spec(job)["terminationGracePeriodSeconds"] == 45
    assert env(job)["KUBEINFER_GRACE_SECONDS"] == "45"
    assert pod_spec(JobBuilder())["terminationGracePeriodSeconds"] == 60
