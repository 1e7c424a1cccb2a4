"""The workers' identity: they may read and patch their job's progress ConfigMap, nothing else."""

from __future__ import annotations

from kubeinfer_api.naming import progress_configmap, worker_account
from kubeinfer_operator.builders.common import COMPONENT_WORKER, JobRef, Obj, metadata


def build_worker_rbac(job: JobRef) -> list[Obj]:
    """ServiceAccount, Role (resourceNames-limited) and RoleBinding, all named `<job>-worker`."""
    name = worker_account(job.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(job, name, COMPONENT_WORKER),
         "automountServiceAccountToken": True},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": metadata(job, name, COMPONENT_WORKER),
         "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                    "resourceNames": [progress_configmap(job.name)], "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": metadata(job, name, COMPONENT_WORKER),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": job.namespace}]},
    ]
