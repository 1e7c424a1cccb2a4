"""Pod events as kubelet posts them (Started, Killing, BackOff, Failed), sent off the agent's loop."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from .kube import Kube
from .status import now

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def event_manifest(pod: Obj, node: str, etype: str, reason: str, message: str, container: str | None) -> Obj:
    meta = pod["metadata"]
    involved: Obj = {"apiVersion": "v1", "kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                     "uid": meta["uid"]}  # fmt: skip
    if container:
        involved["fieldPath"] = f"spec.containers{{{container}}}"
    stamp = now()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": involved,
        "type": etype,
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventRecorder:
    """Queue events and post them from a daemon thread; losing one is harmless, blocking is not."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._queue: queue.Queue[Obj] = queue.Queue(maxsize=1000)
        threading.Thread(target=self._run, name="events", daemon=True).start()

    def record(self, pod: Obj, node: str, etype: str, reason: str, message: str, container: str | None) -> None:
        try:
            self._queue.put_nowait(event_manifest(pod, node, etype, reason, message, container))
        except queue.Full:
            log.warning("event queue full; dropped %s %s", reason, message)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self.kube.post(f"/api/v1/namespaces/{event['metadata']['namespace']}/events", event)
            except Exception as err:
                log.debug("event %s: %s", event["reason"], err)
