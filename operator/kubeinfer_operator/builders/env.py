"""The env contract between the operator and a worker pod (see shared/design.md, "Env contract").

torchrun reads PET_* as its defaults; MASTER_ADDR/WORLD_SIZE/NODE_RANK serve code that reads those.
Storage credentials come from Secrets through optional secretKeyRefs, so a missing key is not fatal.
Injected env never overrides the user's `workers.env` (the user always wins).
"""

from __future__ import annotations

import math

from kubernetes.utils import parse_quantity

from kubeinfer_api.naming import (
    ATTEMPT_ANNOTATION,
    JOB_FILE,
    JOB_MOUNT_DIR,
    master_addr,
    progress_configmap,
)
from kubeinfer_api.plan import processes_per_node, world_size
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_operator.builders.common import JobRef, Obj
from kubeinfer_operator.builders.modelio import cache_env
from kubeinfer_operator.builders.podsecurity import scratch_env

POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
#: Keys read from `output.credentialsSecret` (unprefixed) and `model.credentialsSecret`
#: (prefixed with MODEL_PREFIX, so two stores with different keys never clash).
STORAGE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "GOOGLE_APPLICATION_CREDENTIALS_JSON",
                "AZURE_STORAGE_CONNECTION_STRING")
MODEL_PREFIX = "KUBEINFER_MODEL_"
MODEL_ONLY_KEYS = ("HF_TOKEN",)


def value(name: str, val: object) -> Obj:
    return {"name": name, "value": str(val)}


def field_ref(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def secret_ref(name: str, secret: str, key: str) -> Obj:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}


def rendezvous_env(job: JobRef, spec: DistributedInferenceSpec) -> list[Obj]:
    """torchrun's PET_* defaults plus the plain torch.distributed names."""
    addr, port = master_addr(job.name, job.namespace), spec.rendezvous.port
    rank_path = f"metadata.labels['{POD_INDEX_LABEL}']"
    return [
        value("PET_NNODES", spec.workers.nodes),
        value("PET_NPROC_PER_NODE", processes_per_node(spec)),
        field_ref("PET_NODE_RANK", rank_path),
        value("PET_MASTER_ADDR", addr),
        value("PET_MASTER_PORT", port),
        value("MASTER_ADDR", addr),
        value("MASTER_PORT", port),
        value("WORLD_SIZE", world_size(spec)),
        field_ref("NODE_RANK", rank_path),
    ]


def kubeinfer_env(job: JobRef, spec: DistributedInferenceSpec) -> list[Obj]:
    """Who the worker is and where its job, attempt and progress live."""
    return [
        value("KUBEINFER_JOB", job.name),
        value("KUBEINFER_NAMESPACE", job.namespace),
        field_ref("KUBEINFER_POD_NAME", "metadata.name"),
        field_ref("KUBEINFER_ATTEMPT", f"metadata.annotations['{ATTEMPT_ANNOTATION}']"),
        value("KUBEINFER_JOB_FILE", f"{JOB_MOUNT_DIR}/{JOB_FILE}"),
        value("KUBEINFER_PROGRESS_CONFIGMAP", progress_configmap(job.name)),
        value("KUBEINFER_RENDEZVOUS_TIMEOUT_SECONDS", spec.rendezvous.timeout_seconds),
        # The pod's terminationGracePeriodSeconds: how long a drain on SIGTERM may take.
        value("KUBEINFER_GRACE_SECONDS", spec.workers.termination_grace_period_seconds),
        value("PYTHONUNBUFFERED", "1"),
    ]


def nccl_env(spec: DistributedInferenceSpec) -> list[Obj]:
    """Fail fast instead of hanging: a dead peer tears the process down within the rendezvous timeout."""
    return [
        value("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
        value("TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC", spec.rendezvous.timeout_seconds),
        value("NCCL_DEBUG", "WARN"),
    ]


def threads_env(spec: DistributedInferenceSpec, resources: Obj) -> list[Obj]:
    """OMP_NUM_THREADS, torch's CPU threads per process: the CPU request (else limit) split over the processes,
    at least 1. torch's default is a thread per core of the *node* (torchrun sets 1 only for several
    processes): a small pod on a busy node would run many threads that spin-wait for each other."""
    cpu = resources.get("requests", {}).get("cpu") or resources.get("limits", {}).get("cpu")
    share = parse_quantity(cpu) / processes_per_node(spec) if cpu else 1  # type: ignore[no-untyped-call]
    return [value("OMP_NUM_THREADS", max(1, math.floor(share)))]


def storage_env(spec: DistributedInferenceSpec) -> list[Obj]:
    out: list[Obj] = []
    if spec.output.credentials_secret:
        out += [secret_ref(key, spec.output.credentials_secret, key) for key in STORAGE_KEYS]
    if spec.model.credentials_secret:
        secret = spec.model.credentials_secret
        out += [secret_ref(MODEL_PREFIX + key, secret, key) for key in STORAGE_KEYS]
        out += [secret_ref(key, secret, key) for key in MODEL_ONLY_KEYS]
    if spec.output.endpoint_url:
        # An explicit endpoint in the spec beats one stored in the Secret.
        out = [e for e in out if e["name"] != "AWS_ENDPOINT_URL"]
        out.append(value("AWS_ENDPOINT_URL", spec.output.endpoint_url))
    return out


def merge_env(injected: list[Obj], user: list[Obj]) -> list[Obj]:
    """User entries replace injected ones of the same name; injected come first so $(VAR) refs resolve."""
    mine = {e["name"] for e in user}
    return [e for e in injected if e["name"] not in mine] + list(user)


def worker_env(job: JobRef, spec: DistributedInferenceSpec, resources: Obj) -> list[Obj]:
    """Everything injected, then the user's `workers.env` (which wins); `resources` are the container's."""
    injected = (rendezvous_env(job, spec) + kubeinfer_env(job, spec) + nccl_env(spec) + threads_env(spec, resources)
                + storage_env(spec) + cache_env(spec) + scratch_env())
    return merge_env(injected, spec.workers.env)
