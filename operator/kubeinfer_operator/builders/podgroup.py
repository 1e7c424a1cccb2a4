"""The attempt's PodGroup (scheduling.k8s.io/v1beta1): the scheduler binds all its workers or none."""

from __future__ import annotations

from kubeinfer_api.naming import ATTEMPT_ANNOTATION, pod_group
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_operator.builders.common import COMPONENT_GANG, JobRef, Obj, metadata

API_VERSION = "scheduling.k8s.io/v1beta1"


def min_count(spec: DistributedInferenceSpec) -> int:
    """Every rank is needed (each pod holds ranks the others wait for in their collectives), except in an
    elastic job with workers.minNodes, whose pods claim work on their own: that many start it."""
    return spec.workers.required


def build_pod_group(job: JobRef, spec: DistributedInferenceSpec, attempt: int) -> Obj:
    """A gang of `min_count` pods; with a topology key, all of them in one domain of that node label (the
    TopologyAwareWorkloadScheduling gate; a server without it drops the field, pod affinity still holds)."""
    meta = metadata(job, pod_group(job.name, attempt), COMPONENT_GANG)
    meta["annotations"] = {ATTEMPT_ANNOTATION: str(attempt)}
    body: Obj = {"schedulingPolicy": {"gang": {"minCount": min_count(spec)}}}
    if spec.scheduling.topology_key:
        body["schedulingConstraints"] = {"topology": [{"key": spec.scheduling.topology_key}]}
    if spec.workers.priority_class_name:
        body["priorityClassName"] = spec.workers.priority_class_name
    return {"apiVersion": API_VERSION, "kind": "PodGroup", "metadata": meta, "spec": body}
