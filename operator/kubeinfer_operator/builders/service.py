"""Headless Service giving each worker pod a stable DNS name for rendezvous."""

from __future__ import annotations

from kubeinfer_api.naming import selector, workers
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_operator.builders.common import COMPONENT_WORKER, JobRef, Obj, metadata


def build_service(job: JobRef, spec: DistributedInferenceSpec) -> Obj:
    """publishNotReadyAddresses: workers resolve the master before any pod is Ready (we use no probes)."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(job, workers(job.name), COMPONENT_WORKER),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(job.name, COMPONENT_WORKER),
            "ports": [{"name": "rendezvous", "port": spec.rendezvous.port,
                       "targetPort": spec.rendezvous.port, "protocol": "TCP"}],
        },
    }
