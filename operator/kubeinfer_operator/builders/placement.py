"""Where the workers may go: one topology domain, the attempt's PodGroup, and Kueue's admission."""

from __future__ import annotations

import copy

from kubeinfer_api.naming import selector
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_operator import kueue
from kubeinfer_operator.builders.common import COMPONENT_WORKER, JobRef, Obj


def affinity(job: JobRef, spec: DistributedInferenceSpec) -> Obj | None:
    """The user's affinity plus, with scheduling.topologyKey, a required pod affinity to the job's own
    workers in that topology domain (the first worker picks the domain, the others follow it)."""
    key = spec.scheduling.topology_key
    if not key:
        return spec.workers.affinity
    out: Obj = copy.deepcopy(spec.workers.affinity or {})
    term = {"labelSelector": {"matchLabels": selector(job.name, COMPONENT_WORKER)}, "topologyKey": key}
    pod_affinity = out.setdefault("podAffinity", {})
    pod_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = [
        *pod_affinity.get("requiredDuringSchedulingIgnoredDuringExecution", []), term]
    return out


def place(template: Obj, spec: DistributedInferenceSpec, pod_group: str | None,
          assignment: kueue.Assignment | None) -> None:
    """In place. `pod_group`: the attempt's PodGroup, so the scheduler binds the whole gang or nothing.
    `assignment`: Kueue admitted the job: the flavors' node labels and tolerations join the user's, and a
    topology assignment gates the pods until Kueue's ungater has placed each (it finds them by the
    workload annotation and the pod-set label)."""
    pod, meta = template["spec"], template["metadata"]
    if pod_group:
        pod["schedulingGroup"] = {"podGroupName": pod_group}
    if spec.scheduling.topology_key and assignment is not None:
        meta["annotations"][kueue.REQUIRED_TOPOLOGY_ANNOTATION] = spec.scheduling.topology_key
    if assignment is None:
        return
    meta["labels"][kueue.PODSET_LABEL] = kueue.PODSET
    if assignment.node_selector:
        pod["nodeSelector"] = {**pod.get("nodeSelector", {}), **assignment.node_selector}
    if assignment.tolerations:
        pod["tolerations"] = [*pod.get("tolerations", []), *assignment.tolerations]
    if assignment.topology:
        meta["annotations"][kueue.WORKLOAD_ANNOTATION] = assignment.workload
        pod["schedulingGates"] = [*pod.get("schedulingGates", []), {"name": kueue.TOPOLOGY_GATE}]
