"""One reconcile pass of one job: read the job, decide (pure), then write status and act.

The job itself is read from the apiserver on every pass (its status holds the attempt counter and
must never be stale); its children come from the watches' caches (`Seen`). Order matters for crash
safety: the status is written first, so an operator killed at any point resumes from a status that
already records every restart it began.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubeinfer_api.naming import CHILDREN_HASH, pod_group, workers
from kubeinfer_api.plan import build_plan
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_api.status import DistributedInferenceStatus
from kubeinfer_api.validation import SpecError, parse_spec
from kubeinfer_operator import apply, builders, events, kueue, ttl
from kubeinfer_operator.builders.common import JobRef
from kubeinfer_operator.decide import Cluster, Decision, decide, decide_invalid
from kubeinfer_operator.discovery import PODGROUPS, Discovery
from kubeinfer_operator.kube import Kube, Obj
from kubeinfer_operator.kueue import Assignment, KueueView
from kubeinfer_operator.kueue_client import KueueClient
from kubeinfer_operator.metrics import Metrics
from kubeinfer_operator.observe import Observation, observe
from kubeinfer_operator.settings import Settings

log = logging.getLogger(__name__)
KIND = "DistributedInference"
REPAIR_SECONDS = 300.0
WATCH_LAG_SECONDS = 15.0


@dataclass(frozen=True)
class Result:
    state: str
    requeue_after: float | None


def parse_status(raw: dict[str, Any] | None) -> DistributedInferenceStatus:
    """The stored status; unreadable parts are dropped rather than crash the loop."""
    try:
        return DistributedInferenceStatus.model_validate(raw or {})
    except ValidationError:
        known = DistributedInferenceStatus.model_fields
        keep = {k: v for k, v in (raw or {}).items() if k in {f.alias or n for n, f in known.items()}}
        for key in list(keep):
            try:
                DistributedInferenceStatus.model_validate({key: keep[key]})
            except ValidationError:
                keep.pop(key)
        return DistributedInferenceStatus.model_validate(keep)


@dataclass(frozen=True)
class Seen:
    """A job's worker pods, progress ConfigMap, StatefulSet and their nodes' readiness, as the watches
    last saw them (kopf indexes): a pass reads them from memory, not from the apiserver."""

    pods: list[Obj] = field(default_factory=list)
    progress: Obj | None = None
    statefulset: Obj | None = None
    node_ready: dict[str, bool] = field(default_factory=dict)  # a node missing here counts as not ready
    workload: Obj | None = None  # the job's Kueue Workload (watched only with the Kueue integration on)


class Reconciler:
    def __init__(self, kube: Kube, settings: Settings, metrics: Metrics | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.discovery = Discovery(kube)
        self.kueue = KueueClient(kube, settings.worker_image)
        # job -> (digest, when) of its last full apply: the watches may not show a new child for a while
        self.applied: dict[tuple[str, str], tuple[str, float]] = {}
        # A pass applies independent children side by side.
        self.appliers = ThreadPoolExecutor(max_workers=settings.reconcile_threads, thread_name_prefix="apply")

    def close(self) -> None:
        self.appliers.shutdown(wait=False, cancel_futures=True)

    def reconcile(self, namespace: str, name: str, seen: Seen) -> Result | None:
        """None when the job is gone (or going); otherwise its state and when to look again."""
        started = time.monotonic()
        body = self.kube.get(KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.metrics.jobs.forget(namespace, name)
            self.applied.pop((namespace, name), None)
            return None
        job, generation = JobRef.from_body(body), body["metadata"].get("generation")
        old = parse_status(body.get("status"))
        now = datetime.now(UTC)
        spec: DistributedInferenceSpec | None = None
        obs = Observation()
        labels: dict[str, str] = body["metadata"].get("labels") or {}
        queue = self.queue_view(job, labels, seen.workload)
        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError as err:
            decision = decide_invalid(old, str(err), ttl.spec_ttl(None, body.get("spec") or {}), now, generation)
        else:
            obs = observe(seen.pods, old.attempt, seen.node_ready, (seen.progress or {}).get("data"), seen.statefulset)
            decision = decide(spec, old, obs, now, generation, self.cluster(), queue)
        requeue = self.execute(job, spec, old, decision, obs, queue)
        if spec is not None and decision.kueue:
            self.kueue.apply(job, spec, labels, seen.workload, decision.kueue)
        self.metrics.reconcile_duration.observe(time.monotonic() - started)
        if decision.delete_job:
            self.metrics.jobs.forget(namespace, name)
            return None
        self.metrics.jobs.set(namespace, name, decision.status.state or "Pending")
        return Result(decision.status.state or "Pending", requeue)

    def queue_view(self, job: JobRef, labels: dict[str, str], workload: Obj | None) -> KueueView | None:
        """The job's Kueue Workload (None: the job names no LocalQueue); while it waits, the queue's counts."""
        if kueue.QUEUE_LABEL not in labels:
            return None
        waits = workload is None or not (kueue.is_true(workload, "Admitted") or kueue.is_true(workload, "Finished"))
        counts = "" if not waits or not self.settings.kueue else self.kueue.queue_summary(
            job.namespace, labels[kueue.QUEUE_LABEL])
        return kueue.view(workload, self.settings.kueue, counts)

    def cluster(self) -> Cluster:
        return Cluster(gang=self.discovery.serves(PODGROUPS))

    def execute(self, job: JobRef, spec: DistributedInferenceSpec | None, old: DistributedInferenceStatus,
                decision: Decision, obs: Observation, queue: KueueView | None = None) -> float | None:
        """Status first, then children, pods, events, and at last the job itself (TTL)."""
        requeue = decision.requeue_after
        if decision.status != old:
            body = decision.status.model_dump(by_alias=True, exclude_none=True, mode="json")
            self.kube.patch(KIND, job.namespace, job.name, {"status": body}, subresource="status")
        if decision.workers and spec is not None:
            admitted = self.kueue.assignment(queue, job) if queue is not None else None
            if self.ensure_workers(job, spec, decision.status.attempt, obs, decision.gang, admitted):
                requeue = 1.0  # report Created as soon as the children exist
        elif obs.statefulset_exists or spec is None:
            self.remove_workers(job, decision.status.attempt)
        for pod in decision.delete_pods:
            self.kube.delete("Pod", job.namespace, pod, uid=obs.uids.get(pod))
        for pod in decision.force_delete_pods:
            self.kube.delete("Pod", job.namespace, pod, grace_seconds=0, uid=obs.uids.get(pod))
        events.emit(self.kube, job, decision.events)
        if decision.restart_reason:
            self.metrics.restarted(job.namespace, decision.restart_reason)
        if decision.delete_job:
            log.info("%s/%s: ttlSecondsAfterFinished passed, deleting the job", job.namespace, job.name)
            self.kube.delete(KIND, job.namespace, job.name)
        return requeue

    def ensure_workers(self, job: JobRef, spec: DistributedInferenceSpec, attempt: int, obs: Observation,
                       gang: bool = False, admitted: Assignment | None = None) -> bool:
        """Apply every child unless they were applied as desired (by this process, or as the digest on
        the StatefulSet says); True when one was created. Unchanged children are still re-read every
        REPAIR_SECONDS, so a child deleted by hand comes back. With `gang`, the attempt's PodGroup
        comes before the StatefulSet whose pods name it, and the previous attempt's goes.
        """
        group = pod_group(job.name, attempt) if gang else None
        children = [
            (builders.build_progress_configmap(job), True),
            (builders.build_job_configmap(job, spec, build_plan(spec)), False),
            *((obj, False) for obj in builders.build_worker_rbac(job)),
            (builders.build_service(job, spec), False),
            *([(builders.build_pod_group(job, spec, attempt), True)] if gang else []),
            # Before the StatefulSet (the last wave): no worker port is ever open to other pods.
            *([(builders.build_network_policy(job, spec, self.settings.metrics_scrapers), False)]
              if spec.workers.network_policy else []),
            (builders.build_statefulset(job, spec, self.settings.worker_image, attempt, group, admitted), False),
        ]
        digest = hashlib.sha256(json.dumps(children, sort_keys=True).encode()).hexdigest()[:16]
        key, now = (job.namespace, job.name), time.monotonic()
        applied = self.applied.get(key)
        if applied is None and obs.children_hash == digest:  # applied before this operator started
            self.applied[key] = applied = (digest, now)
        age = now - applied[1] if applied is not None and applied[0] == digest else REPAIR_SECONDS
        # A StatefulSet the watch does not show yet is taken as on its way for WATCH_LAG_SECONDS only.
        if age < REPAIR_SECONDS and (obs.statefulset_exists or age < WATCH_LAG_SECONDS):
            return False
        children[-1][0]["metadata"]["annotations"] = {CHILDREN_HASH: digest}  # the StatefulSet goes last
        fresh = applied is None and not obs.statefulset_exists

        def ensure(child: tuple[Obj, bool]) -> str:
            return apply.ensure(self.kube, child[0], create_only=child[1], likely_missing=fresh)[1]

        # In waves: a RoleBinding's Role must exist first (the apiserver resolves the roleRef to check
        # for privilege escalation), and the StatefulSet's digest says every other child was applied.
        waves = [[c for c in children[:-1] if c[0]["kind"] != "RoleBinding"],
                 [c for c in children if c[0]["kind"] == "RoleBinding"], children[-1:]]
        outcomes = [what for wave in waves for what in self.appliers.map(ensure, wave)]
        if gang and attempt > 0 and applied is not None and applied[0] != digest:
            apply.remove(self.kube, "PodGroup", job.namespace, pod_group(job.name, attempt - 1))
        self.applied[key] = (digest, time.monotonic())
        return "created" in outcomes

    def remove_workers(self, job: JobRef, attempt: int) -> None:
        """Tear down the gang (the Service first: no StatefulSet means no Service); the job, its status,
        the ConfigMaps and the outputs stay. Suspending counts an attempt before the teardown, so the
        PodGroup of the attempt before goes too."""
        self.applied.pop((job.namespace, job.name), None)
        apply.remove(self.kube, "Service", job.namespace, workers(job.name))
        apply.remove(self.kube, "StatefulSet", job.namespace, workers(job.name))
        if self.discovery.serves(PODGROUPS):
            for gone in {attempt, max(attempt - 1, 0)}:
                apply.remove(self.kube, "PodGroup", job.namespace, pod_group(job.name, gone))
