"""Prometheus metrics on their own port; label sets are bounded (namespace, state, known reasons)."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kubeinfer_api.status import Reason

STATES = ("Pending", "Queued", "Unschedulable", "Running", "Restarting", "Suspended", "Complete", "Failed")
KNOWN_REASONS = frozenset(v for k, v in vars(Reason).items() if k.isupper())


class JobStates(Collector):
    """`kubeinfer_jobs{namespace, condition}`: how many jobs are in each state, from the last reconcile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], str] = {}

    def set(self, namespace: str, name: str, state: str) -> None:
        with self._lock:
            self._states[(namespace, name)] = state

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._states.pop((namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            counts = Tally((ns, state) for (ns, _), state in self._states.items())
            namespaces = sorted({ns for ns, _ in self._states})
        family = GaugeMetricFamily("kubeinfer_jobs", "DistributedInference jobs by state.",
                                   labels=["namespace", "condition"])
        for ns in namespaces:
            for state in STATES:
                family.add_metric([ns, state], counts.get((ns, state), 0))
        yield family


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.jobs = JobStates()
        self.registry.register(self.jobs)
        self.reconcile_duration = Histogram(
            "kubeinfer_reconcile_duration_seconds", "Time of one reconcile pass of one job.",
            registry=self.registry, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.restarts = Counter("kubeinfer_restarts_total", "Gang restarts, by reason.",
                                ["namespace", "reason"], registry=self.registry)

    def restarted(self, namespace: str, reason: str) -> None:
        self.restarts.labels(namespace, reason if reason in KNOWN_REASONS else Reason.WORKER_FAILED).inc()

    def serve(self, port: int) -> None:
        """Start the HTTP endpoint (a daemon thread); port 0 disables it."""
        if port:
            start_http_server(port, registry=self.registry)
