"""The job's NetworkPolicy: only the job's own pods reach its workers; the metrics port stays scrapable.

torch.distributed listens on more than the master port (gloo and NCCL pick ephemeral ports, peers
fetch model shards from each other), so ingress from the job's own pods is open on every port.
Egress is left alone: workers reach object storage, the model hub, DNS and the apiserver, whose
addresses are the cluster's business, not the job's.
"""

from __future__ import annotations

from kubeinfer_api.naming import selector, workers
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_operator.builders.common import COMPONENT_WORKER, JobRef, Obj, metadata

#: kubeinfer_runtime.metrics: the port a worker serves /metrics on, unless its env says otherwise.
WORKER_METRICS_PORT = 9400
WORKER_METRICS_PORT_ENV = "KUBEINFER_WORKER_METRICS_PORT"


def worker_metrics_port(spec: DistributedInferenceSpec) -> int:
    """The port the workers serve metrics on (0: off), as the runtime reads it from `workers.env`."""
    for var in spec.workers.env:
        if var.get("name") == WORKER_METRICS_PORT_ENV and "value" in var:
            raw = str(var["value"]).strip()
            return int(raw) if raw.isdigit() else WORKER_METRICS_PORT
    return WORKER_METRICS_PORT


def build_network_policy(job: JobRef, spec: DistributedInferenceSpec, scrapers: dict[str, str]) -> Obj:
    """`scrapers`: labels of the namespaces that may scrape the metrics port; empty: any source."""
    pods = {"matchLabels": selector(job.name, COMPONENT_WORKER)}
    ingress: list[Obj] = [{"from": [{"podSelector": pods}]}]
    port = worker_metrics_port(spec)
    if port:
        metrics: Obj = {"ports": [{"protocol": "TCP", "port": port}]}
        if scrapers:
            metrics["from"] = [{"namespaceSelector": {"matchLabels": dict(scrapers)}}]
        ingress.append(metrics)
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": metadata(job, workers(job.name), COMPONENT_WORKER),
        "spec": {"podSelector": pods, "policyTypes": ["Ingress"], "ingress": ingress},
    }
