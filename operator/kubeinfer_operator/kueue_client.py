"""The Kueue side of a pass: create the job's Workload, tell it what `kueue.sync` decided, and turn an
admission into what the workers' pods get (flavors are read once per TTL: they rarely change)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kubeinfer_api.naming import kueue_workload
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_operator import builders, conditions, kueue
from kubeinfer_operator.builders.common import JobRef
from kubeinfer_operator.kube import MERGE_PATCH, ApiError, Kube
from kubeinfer_operator.kueue import Assignment, KueueView, Sync

log = logging.getLogger(__name__)
Obj = dict[str, Any]
FLAVOR_TTL_SECONDS = 300.0
QUEUE_TTL_SECONDS = 5.0


class KueueClient:
    def __init__(self, kube: Kube, worker_image: str) -> None:
        self.kube = kube
        self.worker_image = worker_image
        self._lock = threading.Lock()
        self._flavors: dict[str, tuple[Obj, float]] = {}
        self._queues: dict[tuple[str, str], tuple[str, float]] = {}

    def queue_summary(self, namespace: str, name: str) -> str:
        """'LocalQueue q: N pending, M admitted' (or that it does not exist), read at most every
        QUEUE_TTL_SECONDS per queue and only while a job of it waits; '' when it cannot be read."""
        key, now = (namespace, name), time.monotonic()
        with self._lock:
            known = self._queues.get(key)
        if known is not None and now - known[1] < QUEUE_TTL_SECONDS:
            return known[0]
        try:
            found = self.kube.get("LocalQueue", namespace, name)
        except ApiError as err:
            log.debug("LocalQueue %s/%s: %s", namespace, name, err)
            return ""
        if found is None:
            text = f"LocalQueue {name} does not exist in namespace {namespace}: create it"
        else:
            status = found.get("status") or {}
            text = (f"LocalQueue {name}: {status.get('pendingWorkloads', 0)} pending, "
                    f"{status.get('admittedWorkloads', 0)} admitted")
        with self._lock:
            self._queues[key] = (text, now)
        return text

    def assignment(self, kv: KueueView, job: JobRef) -> Assignment | None:
        """What the admission adds to the workers' pods (None until admitted)."""
        if not kv.admitted or kv.evicted is not None or not kv.admission:
            return None
        [pod_set, *_] = kv.admission.get("podSetAssignments") or [{}]
        selector: dict[str, str] = {}
        tolerations: list[Obj] = []
        for name in sorted(set((pod_set.get("flavors") or {}).values())):
            flavor = self.flavor(name)
            selector.update(flavor.get("nodeLabels") or {})
            tolerations += flavor.get("tolerations") or []
        return Assignment(cluster_queue=kv.cluster_queue, node_selector=selector, tolerations=tolerations,
                          topology=pod_set.get("topologyAssignment") is not None,
                          workload=kueue_workload(job.name))

    def flavor(self, name: str) -> Obj:
        """A ResourceFlavor's spec, from memory when read in the last FLAVOR_TTL_SECONDS."""
        with self._lock:
            known = self._flavors.get(name)
        if known is not None and time.monotonic() - known[1] < FLAVOR_TTL_SECONDS:
            return known[0]
        spec: Obj = (self.kube.get("ResourceFlavor", None, name) or {}).get("spec") or {}
        with self._lock:
            self._flavors[name] = (spec, time.monotonic())
        return spec

    def priority(self, labels: dict[str, str], spec: DistributedInferenceSpec) -> tuple[Obj, int] | None:
        """(priorityClassRef, value) as Kueue's jobframework resolves it: the job's WorkloadPriorityClass
        label first, then the workers' PriorityClass."""
        if name := labels.get(kueue.PRIORITY_LABEL):
            ref = {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass", "name": name}
            found = self.kube.get("WorkloadPriorityClass", None, name)
        elif name := spec.workers.priority_class_name or "":
            ref = {"group": "scheduling.k8s.io", "kind": "PriorityClass", "name": name}
            found = self.kube.get("PriorityClass", None, name)
        else:
            return None
        if found is None:
            raise ApiError(404, f"{ref['kind']} {name!r} (the job's priority) does not exist")
        return ref, int(found.get("value", 0))

    def apply(self, job: JobRef, spec: DistributedInferenceSpec, labels: dict[str, str], workload: Obj | None,
              change: Sync) -> None:
        """Create the Workload, or patch its spec.active and status; a status conflict waits for the next pass."""
        if change.create:
            body = builders.build_workload(job, spec, self.worker_image, labels[kueue.QUEUE_LABEL],
                                           self.priority(labels, spec))
            try:
                self.kube.create(body)
            except ApiError as err:
                if err.status != 409:
                    raise
            return
        if workload is None:
            return
        name = workload["metadata"]["name"]
        if change.active is not None:
            self.kube.patch("Workload", job.namespace, name, {"spec": {"active": change.active}})
        patch = kueue.status_patch(workload, change, conditions.iso_now())
        if patch is None:
            return
        try:
            self.kube.patch("Workload", job.namespace, name, patch, subresource="status", content_type=MERGE_PATCH)
        except ApiError as err:
            if err.status != 409:
                raise
            log.info("%s/%s: Kueue changed Workload %s first; deciding again", job.namespace, job.name, name)
