"""Which optional APIs the cluster serves (API discovery), asked at most once per TTL.

A cluster gains or loses an API only when its apiserver restarts with other flags, so a few minutes
of staleness cost nothing, while asking on every pass would cost a request per job per pass.
"""

from __future__ import annotations

import logging
import threading
import time

from kubeinfer_operator.kube import ApiError, Kube

log = logging.getLogger(__name__)
PODGROUPS = ("scheduling.k8s.io/v1beta1", "podgroups")
TTL_SECONDS = 300.0


class Discovery:
    def __init__(self, kube: Kube, ttl: float = TTL_SECONDS) -> None:
        self.kube = kube
        self.ttl = ttl
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[bool, float]] = {}

    def serves(self, api: tuple[str, str]) -> bool:
        """True when `GET /apis/<group/version>` lists the resource; an error answers False until the TTL ends."""
        now = time.monotonic()
        with self._lock:
            known = self._seen.get(api)
            if known is not None and now - known[1] < self.ttl:
                return known[0]
            served = self._ask(*api)
            if known is None or known[0] != served:
                log.info("API %s/%s is %s", api[0], api[1], "served" if served else "not served")
            self._seen[api] = (served, now)
            return served

    def _ask(self, group_version: str, resource: str) -> bool:
        try:
            answer = self.kube.request("GET", f"/apis/{group_version}")
        except ApiError as err:
            if err.status not in (404, 503):
                log.warning("discovery of %s failed: %s", group_version, err)
            return False
        return any(r.get("name") == resource for r in answer.get("resources") or [])
