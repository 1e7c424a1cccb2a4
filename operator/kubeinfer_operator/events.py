"""Kubernetes Events for condition transitions, written after the status they describe."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime

from kubeinfer_api import API_VERSION, KIND
from kubeinfer_operator.builders.common import JobRef
from kubeinfer_operator.conditions import Event, iso
from kubeinfer_operator.kube import ApiError, Kube, Obj

log = logging.getLogger(__name__)
COMPONENT = "kubeinfer-operator"


def build_event(job: JobRef, event: Event, now_iso: str) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{job.name}.", "namespace": job.namespace},
        "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": job.name,
                           "namespace": job.namespace, "uid": job.uid},
        "type": event.type, "reason": event.reason, "message": event.message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT, "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": now_iso, "lastTimestamp": now_iso, "count": 1,
    }


def emit(kube: Kube, job: JobRef, events: list[Event]) -> None:
    """Best effort: a lost event must never fail or repeat a reconcile."""
    now = iso(datetime.now(UTC))
    for event in events:
        log.log(logging.WARNING if event.type == "Warning" else logging.INFO,
                "%s/%s %s: %s", job.namespace, job.name, event.reason, event.message)
        try:
            kube.create(build_event(job, event, now))
        except ApiError as err:
            log.warning("event %s for %s/%s not posted: %s", event.reason, job.namespace, job.name, err)
