"""Thin kopf handlers: one level-based reconcile loop per job, woken by the job's pods and progress.

A per-job daemon is the only writer of a job's status and children, so passes never race; watches on
worker pods and progress ConfigMaps wake it and keep its children in memory (kopf indexes, filtered
by label on the server). Each pass reads the job itself from the apiserver and nothing is kept that
the cluster does not hold, so an operator restarted at any moment resumes where the cluster says it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf

from kubeinfer_api import GROUP, PLURAL, VERSION
from kubeinfer_api.naming import COMPONENT_LABEL, JOB_LABEL
from kubeinfer_operator.builders.common import COMPONENT_PROGRESS, COMPONENT_WORKER
from kubeinfer_operator.kube import Kube, load_api_client
from kubeinfer_operator.metrics import Metrics
from kubeinfer_operator.reconciler import Reconciler, Result, Seen
from kubeinfer_operator.settings import FINALIZER, PROGRESS_PREFIX, Settings

log = logging.getLogger(__name__)
ERROR_BACKOFF = (2.0, 5.0, 15.0, 30.0, 60.0)


@dataclass
class Wakeup:
    """A job loop's alarm: `changed` ends its nap; `urgent` also skips the settle window."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    urgent: asyncio.Event = field(default_factory=asyncio.Event)


Wakeups = dict[tuple[str, str], Wakeup]


class NoDiffBase(kopf.DiffBaseStorage):
    """No on.create/on.update handlers here, so kopf needs no diff base: skip the deep copy of every
    watched event it would otherwise build, and keep no last-handled-configuration annotation."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> Any:
        return {}

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.startup()
def configure(*, settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """All operator settings in one place: our finalizer, annotation prefix, posting, timeouts."""
    config = Settings.from_env()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PROGRESS_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Server-side filters: only our children's events reach the operator, not every pod in the cluster.
    settings.watching.label_selectors["", "v1", "pods"] = f"{COMPONENT_LABEL}={COMPONENT_WORKER}"
    settings.watching.label_selectors["", "v1", "configmaps"] = f"{COMPONENT_LABEL}={COMPONENT_PROGRESS}"
    settings.watching.label_selectors["apps", "v1", "statefulsets"] = f"{COMPONENT_LABEL}={COMPONENT_WORKER}"
    # Our own events describe transitions; kopf posts only its warnings and errors as events.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 8
    metrics = Metrics()
    metrics.serve(config.metrics_port)
    memo.settings = config
    memo.metrics = metrics
    memo.reconciler = Reconciler(Kube(load_api_client(pool=config.reconcile_threads * 3)), config, metrics)
    memo.executor = ThreadPoolExecutor(max_workers=config.reconcile_threads, thread_name_prefix="reconcile")
    memo.wakeups = {}
    memo.suspends = {}  # job -> spec.suspend as last seen, so only a change wakes its loop
    log.info("kubeinfer operator: worker image %s, metrics port %s", config.worker_image, config.metrics_port)


@kopf.on.cleanup()
def shutdown(*, memo: Any, **_: Any) -> None:
    memo.executor.shutdown(wait=False, cancel_futures=True)
    memo.reconciler.close()


def wake(memo: Any, namespace: str | None, job: str | None, urgent: bool = False) -> None:
    """Call only on the event loop (async handlers): asyncio.Event is not thread-safe. `urgent` for a
    change a user or a queue waits on (Kueue admission or eviction, suspend or resume)."""
    wakeups: Wakeups = memo.wakeups
    wakeup = wakeups.get((namespace or "", job or ""))
    if wakeup is not None:
        wakeup.changed.set()
        if urgent:
            wakeup.urgent.set()


async def nap(wakeup: Wakeup, stopped: kopf.DaemonStopped, seconds: float, settle: float = 0.0) -> None:
    """Sleep until woken, stopped or `seconds` pass. A wakeup is followed by `settle` seconds in which
    further wakeups coalesce (a gang's pods change in bursts, and one pass sees the whole burst), cut short
    by an urgent one: an admission is acted on at once."""
    await _first_of(wakeup.changed.wait(), stopped.wait(), timeout=seconds)
    if wakeup.changed.is_set() and not stopped and settle > 0 and not wakeup.urgent.is_set():
        await _first_of(stopped.wait(), wakeup.urgent.wait(), timeout=settle)
    wakeup.changed.clear()
    wakeup.urgent.clear()


async def _first_of(*waits: Any, timeout: float) -> None:
    waiters = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def next_delay(result: Result | None, settings: Settings) -> float:
    base = settings.finished_resync_seconds if result and result.state in ("Complete", "Failed") else (
        settings.resync_seconds)
    if result is None or result.requeue_after is None:
        return float(base)
    return max(0.5, min(float(base), result.requeue_after))


def snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a pass reads of a watched object: metadata (less managedFields, the bulk of most objects),
    a pod's node, status and data. References, not copies: kopf decodes every watch event into new
    dicts and never changes them afterwards, so the reconcile threads may read them at any time."""
    raw = dict(body)
    out: dict[str, Any] = {"metadata": {k: v for k, v in raw.get("metadata", {}).items() if k != "managedFields"}}
    node = (raw.get("spec") or {}).get("nodeName")
    if node:
        out["spec"] = {"nodeName": node}
    out.update((key, raw[key]) for key in ("status", "data") if key in raw)
    return out


@kopf.index("", "v1", "pods", labels={COMPONENT_LABEL: COMPONENT_WORKER})
def worker_pods(*, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", labels.get(JOB_LABEL, "")): snapshot(body)}


@kopf.index("", "v1", "configmaps", labels={COMPONENT_LABEL: COMPONENT_PROGRESS})
def progress_configmaps(*, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", labels.get(JOB_LABEL, "")): snapshot(body)}


@kopf.index("apps", "v1", "statefulsets", labels={COMPONENT_LABEL: COMPONENT_WORKER})
def worker_statefulsets(*, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", labels.get(JOB_LABEL, "")): snapshot(body)}


@kopf.index("", "v1", "nodes")
def node_ready(*, name: str, status: Mapping[str, Any], **_: Any) -> Any:
    conds = status.get("conditions") or []
    return {name: any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)}


INDEXES = ("worker_pods", "progress_configmaps", "worker_statefulsets", "node_ready")
OPTIONAL_INDEXES = ("kueue_workloads",)  # registered only with the Kueue integration on


def seen(key: tuple[str, str], indexes: Mapping[str, kopf.Index[Any, Any]]) -> Seen:
    """The job's children from the indexes; called on the event loop, where kopf updates them."""
    def one(index: str) -> Any:
        return next(iter(indexes[index].get(key, [])), None) if index in indexes else None

    pods = list(indexes["worker_pods"].get(key, []))
    nodes = {p.get("spec", {}).get("nodeName") for p in pods} - {None, ""}
    ready = {str(n): bool(next(iter(indexes["node_ready"].get(n, [])), False)) for n in nodes}
    return Seen(pods=pods, progress=one("progress_configmaps"), statefulset=one("worker_statefulsets"),
                node_ready=ready, workload=one("kueue_workloads"))


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def reconcile_job(*, name: str, namespace: str | None, stopped: kopf.DaemonStopped, memo: Any,
                        **kwargs: Any) -> None:
    """The job's reconcile loop: pass, then sleep until woken or the next resync/deadline."""
    namespace = namespace or ""
    wakeups: Wakeups = memo.wakeups
    wakeup = wakeups.setdefault((namespace, name), Wakeup())
    loop, errors = asyncio.get_running_loop(), 0
    # kopf passes every index by its name.
    indexes = {index: kwargs[index] for index in (*INDEXES, *OPTIONAL_INDEXES) if index in kwargs}
    try:
        while not stopped:
            try:
                view = seen((namespace, name), indexes)
                result = await loop.run_in_executor(memo.executor, memo.reconciler.reconcile, namespace, name, view)
                delay, errors = next_delay(result, memo.settings), 0
            except Exception:
                delay = ERROR_BACKOFF[min(errors, len(ERROR_BACKOFF) - 1)]
                errors += 1
                log.exception("%s/%s: reconcile failed, retrying in %.0fs", namespace, name, delay)
            await nap(wakeup, stopped, delay, memo.settings.wakeup_settle_seconds)
    finally:
        wakeups.pop((namespace, name), None)
        memo.suspends.pop((namespace, name), None)
        memo.metrics.jobs.forget(namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def suspend_changed(*, name: str, namespace: str | None, spec: Mapping[str, Any], memo: Any,
                          **_: Any) -> None:
    """Act on suspend/resume at once instead of at the next resync. An event handler, not on.update:
    kopf then keeps no last-handled-configuration annotation, one write less per job."""
    key, suspend = (namespace or "", name), bool(spec.get("suspend", False))
    if memo.suspends.setdefault(key, suspend) != suspend:
        memo.suspends[key] = suspend
        wake(memo, namespace, name, urgent=True)


@kopf.on.event("", "v1", "pods", labels={COMPONENT_LABEL: COMPONENT_WORKER})
async def worker_pod_changed(*, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any) -> None:
    wake(memo, namespace, labels.get(JOB_LABEL))


@kopf.on.event("", "v1", "configmaps", labels={COMPONENT_LABEL: COMPONENT_PROGRESS})
async def progress_changed(*, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any) -> None:
    wake(memo, namespace, labels.get(JOB_LABEL))


@kopf.on.probe(id="jobs")
def jobs_watched(*, memo: Any, **_: Any) -> int:
    """Liveness detail: how many job loops run."""
    return len(memo.wakeups)
