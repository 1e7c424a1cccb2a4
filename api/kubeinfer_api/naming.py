"""Deterministic child names and labels: a retried handler finds what it created before."""

from __future__ import annotations

MAX_JOB_NAME = 44  # <name>-workers-<ordinal> and the revision-hash label must stay within 63 chars
JOB_LABEL = "kubeinfer.io/job-name"
COMPONENT_LABEL = "kubeinfer.io/component"
ATTEMPT_ANNOTATION = "kubeinfer.io/attempt"
#: On the StatefulSet: a digest of every child as last applied, so unchanged children are not re-read.
CHILDREN_HASH = "kubeinfer.io/children-hash"
JOB_MOUNT_DIR = "/etc/kubeinfer"
JOB_FILE = "job.json"
#: Where a worker mounts spec.model.cache, and the env that tells the runtime.
MODEL_CACHE_DIR = "/var/cache/kubeinfer/model-cache"
MODEL_CACHE_ENV = "KUBEINFER_MODEL_CACHE"
#: The port on which a worker pod serves the model files it holds to the job's other pods (fan-out).
MODEL_PEER_PORT = 9401


def job_configmap(job: str) -> str:
    return f"{job}-job"


def progress_configmap(job: str) -> str:
    return f"{job}-progress"


def workers(job: str) -> str:
    """Name of both the headless Service and the StatefulSet (pods are `<this>-<ordinal>`)."""
    return f"{job}-workers"


def pod_group(job: str, attempt: int) -> str:
    """The attempt's scheduling.k8s.io PodGroup: a new attempt is placed as a whole again."""
    return f"{job}-gang-{attempt}"


def kueue_workload(job: str) -> str:
    """The job's one Kueue Workload (kueue.x-k8s.io), for its whole life."""
    return f"{job}-kueue"


def worker_account(job: str) -> str:
    """ServiceAccount, Role and RoleBinding of the workers."""
    return f"{job}-worker"


def master_addr(job: str, namespace: str) -> str:
    return worker_addr(job, namespace, 0)


def worker_addr(job: str, namespace: str, index: int) -> str:
    """The stable DNS name of worker pod `index` (the headless Service's record)."""
    return f"{workers(job)}-{index}.{workers(job)}.{namespace}.svc"


def labels(job: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kubeinfer",
        "app.kubernetes.io/instance": job,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "kubeinfer-operator",
        JOB_LABEL: job,
        COMPONENT_LABEL: component,
    }


def selector(job: str, component: str) -> dict[str, str]:
    return {JOB_LABEL: job, COMPONENT_LABEL: component}
