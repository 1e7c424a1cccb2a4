"""The worker StatefulSet: one pod per node, all started at once, replaced only by a gang restart."""

from __future__ import annotations

from typing import Any

from kubeinfer_api.naming import (
    ATTEMPT_ANNOTATION,
    JOB_MOUNT_DIR,
    job_configmap,
    labels,
    selector,
    worker_account,
    workers,
)
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_operator.builders import placement
from kubeinfer_operator.builders.common import COMPONENT_WORKER, JobRef, Obj, metadata
from kubeinfer_operator.builders.env import worker_env
from kubeinfer_operator.builders.modelio import cache_mounts, cache_volumes, peer_port
from kubeinfer_operator.builders.podsecurity import (
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    default_requests,
    scratch_mounts,
    scratch_volumes,
)
from kubeinfer_operator.kueue import Assignment

GPU_RESOURCE = "nvidia.com/gpu"
CONTAINER = "worker"


def resources(spec: DistributedInferenceSpec) -> Obj:
    """The user's resources, with nvidia.com/gpu forced to gpusPerNode (the world size depends on it)
    and default cpu/memory requests where the user set none."""
    user = spec.workers.resources
    limits: dict[str, Any] = dict(user.limits) if user else {}
    requests: dict[str, Any] = default_requests(limits, dict(user.requests) if user else {})
    limits.pop(GPU_RESOURCE, None)
    requests.pop(GPU_RESOURCE, None)
    if spec.workers.gpus_per_node > 0:
        limits[GPU_RESOURCE] = requests[GPU_RESOURCE] = spec.workers.gpus_per_node
    out: Obj = {}
    if limits:
        out["limits"] = {k: str(v) for k, v in limits.items()}
    if requests:
        out["requests"] = {k: str(v) for k, v in requests.items()}
    return out


def container(job: JobRef, spec: DistributedInferenceSpec, image: str) -> Obj:
    w = spec.workers
    own = resources(spec)
    out: Obj = {
        "name": CONTAINER,
        "image": w.image or image,
        "command": ["kubeinfer-worker"],
        "env": worker_env(job, spec, own),
        "ports": [{"name": "rendezvous", "containerPort": spec.rendezvous.port, "protocol": "TCP"}, peer_port()],
        "resources": own,
        "volumeMounts": [
            {"name": "job-config", "mountPath": JOB_MOUNT_DIR, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            *cache_mounts(spec),
            *scratch_mounts(w.volume_mounts),
            *w.volume_mounts,
        ],
        "securityContext": RESTRICTED_CONTAINER,
        # The last log lines become the failure message when the worker writes no termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if w.image_pull_policy:
        out["imagePullPolicy"] = w.image_pull_policy
    return out


def pod_spec(job: JobRef, spec: DistributedInferenceSpec, image: str) -> Obj:
    w = spec.workers
    out: Obj = {
        "serviceAccountName": worker_account(job.name),
        "restartPolicy": "Always",
        # SIGTERM (preemption, eviction, suspend) leaves this long to commit finished items and stop.
        "terminationGracePeriodSeconds": w.termination_grace_period_seconds,
        "enableServiceLinks": False,
        "securityContext": RESTRICTED_POD,
        "containers": [container(job, spec, image)],
        "volumes": [
            {"name": "job-config", "configMap": {"name": job_configmap(job.name)}},
            # Memory-backed: the 64 MiB default /dev/shm breaks NCCL and dataloaders.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(w.shm_size)}},
            *cache_volumes(spec),
            *scratch_volumes(w.volume_mounts),
            *w.volumes,
        ],
    }
    optional = {"nodeSelector": w.node_selector or None, "tolerations": w.tolerations or None,
                "affinity": placement.affinity(job, spec), "priorityClassName": w.priority_class_name,
                "schedulerName": w.scheduler_name,
                "imagePullSecrets": [{"name": ref.name} for ref in w.image_pull_secrets] or None}
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


def pod_template(job: JobRef, spec: DistributedInferenceSpec, image: str, attempt: int,
                 pod_group: str | None = None, assignment: Assignment | None = None) -> Obj:
    """The workers' pod template, placed (placement.place) in the attempt's PodGroup and Kueue admission."""
    template: Obj = {
        "metadata": {"labels": {**spec.workers.pod_labels, **labels(job.name, COMPONENT_WORKER)},
                     "annotations": {**spec.workers.pod_annotations, ATTEMPT_ANNOTATION: str(attempt)}},
        "spec": pod_spec(job, spec, image),
    }
    placement.place(template, spec, pod_group, assignment)
    return template


def build_statefulset(job: JobRef, spec: DistributedInferenceSpec, image: str, attempt: int,
                      pod_group: str | None = None, assignment: Assignment | None = None) -> Obj:
    """`attempt` goes into the pod template: bumping it (plus deleting the pods) is a gang restart."""
    name = workers(job.name)
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": metadata(job, name, COMPONENT_WORKER),
        "spec": {
            "replicas": spec.workers.nodes,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            # Pods change only when the operator deletes them: a gang restart replaces all at once.
            "updateStrategy": {"type": "OnDelete"},
            "selector": {"matchLabels": selector(job.name, COMPONENT_WORKER)},
            "template": pod_template(job, spec, image, attempt, pod_group, assignment),
        },
    }
