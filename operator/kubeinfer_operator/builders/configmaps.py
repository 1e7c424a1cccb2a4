"""The job ConfigMap (read by workers) and the progress ConfigMap (written by workers)."""

from __future__ import annotations

from kubeinfer_api.jobconfig import JobConfig
from kubeinfer_api.naming import JOB_FILE, job_configmap, progress_configmap
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_api.status import Plan
from kubeinfer_operator.builders.common import COMPONENT_CONFIG, COMPONENT_PROGRESS, JobRef, Obj, metadata


def build_job_configmap(job: JobRef, spec: DistributedInferenceSpec, plan: Plan) -> Obj:
    """job.json: the resolved spec and plan, so workers need no API access to learn their job."""
    config = JobConfig(name=job.name, namespace=job.namespace, uid=job.uid, spec=spec, plan=plan)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": metadata(job, job_configmap(job.name), COMPONENT_CONFIG),
            "data": {JOB_FILE: config.to_json()}}


def build_progress_configmap(job: JobRef) -> Obj:
    """Created empty; only rank 0 writes `data`, so the operator never patches it after creation."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": metadata(job, progress_configmap(job.name), COMPONENT_PROGRESS)}
