"""What every child shares: the owning job's identity, owner reference and metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeinfer_api import API_VERSION, KIND
from kubeinfer_api.naming import labels

Obj = dict[str, Any]

COMPONENT_CONFIG = "job-config"
COMPONENT_PROGRESS = "progress"
COMPONENT_WORKER = "worker"
COMPONENT_GANG = "gang"
COMPONENT_QUEUE = "queue"


@dataclass(frozen=True)
class JobRef:
    """The identity of a DistributedInference, enough to name and own its children."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Obj) -> JobRef:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""))


def owner_reference(job: JobRef) -> Obj:
    """Controller reference: deleting the job garbage-collects the child (no finalizer needed)."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": job.name, "uid": job.uid,
            "controller": True, "blockOwnerDeletion": True}


def metadata(job: JobRef, name: str, component: str) -> Obj:
    return {"name": name, "namespace": job.namespace, "labels": labels(job.name, component),
            "ownerReferences": [owner_reference(job)]}
