"""Progress: counts the ranks publish (no listing of the ledger, no collectives in the hot loop), at a bounded rate.

Each rank writes its own counts of committed and failed items with each commit record
(`Ledger.write_counts`); a background thread adds them up every few seconds (one small read per rank,
whatever the number of items), logs a tqdm-style line (done/total, items/s,
ETA) and, on global rank 0 in a pod, patches ConfigMap `<job>-progress` with the contract of
`kubeinfer_api.progress`. Phase changes are reported at once. API errors are logged, never raised:
progress must not fail a job.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from kubeinfer_api import progress as contract
from kubeinfer_api.status import OutputStatus

log = logging.getLogger("kubeinfer.progress")
INTERVAL_S = 5.0


class Sink(Protocol):
    def publish(self, report: contract.Progress) -> None: ...


class ConfigMapSink:
    """Patches `<job>-progress` with the worker's ServiceAccount (RBAC: get/patch that ConfigMap only)."""

    def __init__(self, name: str, namespace: str) -> None:
        from kubernetes import client, config

        config.load_incluster_config()  # type: ignore[no-untyped-call]
        self.api = client.CoreV1Api()
        self.name, self.namespace = name, namespace
        self.last_error = 0.0

    def publish(self, report: contract.Progress) -> None:
        try:
            self.api.patch_namespaced_config_map(self.name, self.namespace, {"data": contract.encode(report)})
        except Exception as err:  # any API or network error: log at most once a minute, keep computing
            if time.monotonic() - self.last_error > 60:
                log.warning("progress: cannot patch ConfigMap %s/%s: %s", self.namespace, self.name, err)
                self.last_error = time.monotonic()


def configmap_sink(job: str, namespace: str) -> Sink | None:
    """A sink when KUBEINFER_PROGRESS=configmap, or by default inside a pod; None otherwise or on error."""
    mode = os.environ.get("KUBEINFER_PROGRESS", "auto")
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if mode == "off" or (mode == "auto" and not in_pod):
        return None
    name = os.environ.get("KUBEINFER_PROGRESS_CONFIGMAP") or f"{job}-progress"
    try:
        return ConfigMapSink(name, os.environ.get("KUBEINFER_NAMESPACE") or namespace)
    except Exception as err:  # no in-cluster config: run anyway, progress stays in the logs
        log.warning("progress: ConfigMap reporting disabled: %s", err)
        return None


def progress_line(done: int, total: int, rate: float, eta: int | None, failed: int) -> str:
    width = 20
    filled = int(width * done / total) if total else width
    eta_text = "?" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
    return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} items ({failed} failed) "
            f"{rate:.2f} items/s ETA {eta_text}")


class Reporter:
    """Owns the current phase and counts; a daemon thread refreshes them every `interval` seconds."""

    def __init__(self, attempt: int, sink: Sink | None, log_lines: bool = True, interval: float = INTERVAL_S) -> None:
        self.sink, self.log_lines, self.interval = sink, log_lines, interval
        self.counts: Callable[[], tuple[int, int]] | None = None  # this run's (succeeded, failed), all ranks
        self.report = contract.Progress(attempt=attempt, phase="starting")
        self.lock = threading.Lock()
        self.refresh_lock = threading.Lock()  # one counts read at a time: a late stale one never wins
        self.publish_lock = threading.Lock()  # reports reach the sink in the order they were made
        self.stop_event = threading.Event()
        self.started: tuple[float, int] | None = None  # (time, committed) when running began
        self.thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def start(self) -> Reporter:
        self.publish()
        self.thread.start()
        return self

    def set(self, **fields: Any) -> None:
        """Change fields (phase, total, skipped, plan, output, message) and publish at once."""
        with self.lock:
            self.report = self.report.model_copy(update=fields)
            if fields.get("phase") == "running" and self.started is None:
                self.started = (time.monotonic(), self.report.skipped)
        self.publish()

    def track(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Count with `counts`: this run's items (succeeded, failed); the earlier runs' are `skipped`."""
        self.counts = counts

    def refresh(self) -> None:
        """Counts from the ranks' published counters (rate over this attempt's own commits)."""
        if self.counts is None:
            return
        succeeded, failed = self.counts()
        with self.lock:
            self._count(self.report.skipped + succeeded, failed)

    def _count(self, committed: int, failed: int) -> None:
        """The counts, with the rate and ETA over this attempt's own commits (the caller holds the lock)."""
        rate, eta = 0.0, None
        if self.started is not None:
            elapsed = max(time.monotonic() - self.started[0], 1e-3)
            rate = max(committed - self.started[1], 0) / elapsed
            remaining = max(self.report.total - committed - failed, 0)
            eta = int(remaining / rate) if rate > 0 else None
        self.report = self.report.model_copy(update={
            "succeeded": committed, "failed": failed, "items_per_second": round(rate, 3), "eta_seconds": eta})

    def publish(self) -> None:
        with self.publish_lock:
            with self.lock:
                report = self.report.model_copy(update={"updated_at": contract.now_iso()})
            if self.sink is not None:
                self.sink.publish(report)

    def close(self, phase: str, message: str = "", output: OutputStatus | None = None,
              counts: tuple[int, int] | None = None) -> None:
        """The last report. `counts`: the job's (succeeded, failed) as the ledger has them at the end,
        which the operator judges successPolicy by; else this run's published counters, read once more."""
        self.stop_event.set()
        with self.refresh_lock:  # waits out a refresh in flight, so its older counts cannot land after these
            if counts is not None:  # the rate too: a job shorter than one refresh would end saying 0 items/s
                with self.lock:
                    self._count(*counts)
            else:
                try:
                    self.refresh()
                except Exception as err:  # storage gone: report what we have
                    log.warning("progress: cannot read the counts: %s", err)
        self.set(phase=phase, message=message[-2000:], **({"output": output} if output else {}))
        self._log()

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            with self.refresh_lock:
                if self.stop_event.is_set():
                    return
                try:
                    self.refresh()
                except Exception as err:  # a storage hiccup must not kill progress
                    log.warning("progress: cannot read the counts: %s", err)
                    continue
            self.publish()
            if self.report.phase == "running":
                self._log()

    def _log(self) -> None:
        if not self.log_lines:
            return
        r = self.report
        log.info("%s %s", r.phase, progress_line(r.done, r.total, r.items_per_second, r.eta_seconds, r.failed))

