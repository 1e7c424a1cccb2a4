"""The job's Kueue Workload: one pod set of `workers.nodes` pods, so Kueue admits the whole job or none."""

from __future__ import annotations

from kubeinfer_api.naming import kueue_workload
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_operator import kueue
from kubeinfer_operator.builders.common import COMPONENT_QUEUE, JobRef, Obj, metadata
from kubeinfer_operator.builders.statefulset import pod_template


def build_workload(job: JobRef, spec: DistributedInferenceSpec, image: str, queue: str,
                   priority: tuple[Obj, int] | None = None) -> Obj:
    """`priority`: (priorityClassRef, value), resolved by the caller from the job's
    kueue.x-k8s.io/priority-class label (a WorkloadPriorityClass) or workers.priorityClassName."""
    pod_set: Obj = {"name": kueue.PODSET, "count": spec.workers.nodes,
                    "template": pod_template(job, spec, image, attempt=0)}
    if spec.scheduling.topology_key:
        pod_set["topologyRequest"] = {"required": spec.scheduling.topology_key}
    body: Obj = {"queueName": queue, "active": not spec.suspend, "podSets": [pod_set]}
    if priority is not None:
        body["priorityClassRef"], body["priority"] = priority
    meta = metadata(job, kueue_workload(job.name), COMPONENT_QUEUE)
    meta["labels"][kueue.JOB_UID_LABEL] = job.uid  # Kueue names the owner job by it (events, preemption)
    return {"apiVersion": kueue.API_VERSION, "kind": "Workload", "metadata": meta, "spec": body}
