"""Pure manifest builders: (job, spec, settings) -> dict, no I/O. Everything is owned by the job."""

from __future__ import annotations

from kubeinfer_operator.builders.common import JobRef, owner_reference
from kubeinfer_operator.builders.configmaps import build_job_configmap, build_progress_configmap
from kubeinfer_operator.builders.networkpolicy import build_network_policy
from kubeinfer_operator.builders.podgroup import build_pod_group
from kubeinfer_operator.builders.rbac import build_worker_rbac
from kubeinfer_operator.builders.service import build_service
from kubeinfer_operator.builders.statefulset import build_statefulset
from kubeinfer_operator.builders.workload import build_workload

__all__ = [
    "JobRef",
    "build_job_configmap",
    "build_network_policy",
    "build_pod_group",
    "build_progress_configmap",
    "build_service",
    "build_statefulset",
    "build_worker_rbac",
    "build_workload",
    "owner_reference",
]
