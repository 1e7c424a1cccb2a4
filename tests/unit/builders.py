"""Fluent builders for tests: DistributedInference specs, worker pods and statuses.

    JobBuilder("cats").nodes(2).gpus(4).strategy("context", ring=2).obj()
    PodBuilder("cats", 0).attempt(1).running().obj()
"""

from __future__ import annotations

import copy
from typing import Any

from kubeinfer_api import API_VERSION, KIND
from kubeinfer_api.naming import ATTEMPT_ANNOTATION, labels, workers
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_api.validation import parse_spec
from kubeinfer_operator.builders.common import JobRef

Obj = dict[str, Any]


class JobBuilder:
    """A DistributedInference manifest; `.spec()` parses it the way the operator does."""

    def __init__(self, name: str = "cats", namespace: str = "default") -> None:
        self._name, self._namespace = name, namespace
        self._spec: Obj = {"model": {"uri": "s3://models/tiny-flux"},
                           "inputs": {"prompts": ["a cat", "a dog"]},
                           "output": {"uri": "s3://out/cats/"}}

    def _set(self, path: str, value: Any) -> JobBuilder:
        node = self._spec
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        return self

    def set(self, path: str, value: Any) -> JobBuilder:
        """Any field by dotted camelCase path, e.g. .set("rendezvous.port", 29600)."""
        return self._set(path, value)

    def nodes(self, n: int) -> JobBuilder:
        return self._set("workers.nodes", n)

    def gpus(self, n: int) -> JobBuilder:
        return self._set("workers.gpusPerNode", n)

    def processes(self, n: int) -> JobBuilder:
        return self._set("workers.processesPerNode", n)

    def image(self, image: str) -> JobBuilder:
        return self._set("workers.image", image)

    def env(self, name: str, value: str) -> JobBuilder:
        self._spec.setdefault("workers", {}).setdefault("env", []).append({"name": name, "value": value})
        return self

    def strategy(self, kind: str, ring: int = 1, ulysses: int = 1) -> JobBuilder:
        self._set("strategy.type", kind)
        if kind == "context":
            self._set("strategy.context", {"ringDegree": ring, "ulyssesDegree": ulysses})
        if kind == "pipeline":
            self._set("task.type", "text-generation")
        return self

    def task(self, kind: str) -> JobBuilder:
        return self._set("task.type", kind)

    def max_restarts(self, n: int) -> JobBuilder:
        return self._set("failurePolicy.maxRestarts", n)

    def stall_timeout(self, seconds: int) -> JobBuilder:
        return self._set("failurePolicy.stallTimeoutSeconds", seconds)

    def min_succeeded(self, ratio: float) -> JobBuilder:
        return self._set("successPolicy.minSucceededRatio", ratio)

    def suspend(self, value: bool = True) -> JobBuilder:
        return self._set("suspend", value)

    def ttl(self, seconds: int) -> JobBuilder:
        return self._set("ttlSecondsAfterFinished", seconds)

    def model_secret(self, name: str) -> JobBuilder:
        return self._set("model.credentialsSecret", name)

    def output_secret(self, name: str, endpoint: str | None = None) -> JobBuilder:
        self._set("output.credentialsSecret", name)
        return self._set("output.endpointUrl", endpoint) if endpoint else self

    def raw_spec(self) -> Obj:
        return copy.deepcopy(self._spec)

    def spec(self) -> DistributedInferenceSpec:
        return parse_spec(self.raw_spec())

    def ref(self) -> JobRef:
        return JobRef(self._name, self._namespace, f"uid-{self._name}")

    def obj(self) -> Obj:
        """The manifest as `kubectl apply` would send it."""
        return {"apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": self._name, "namespace": self._namespace},
                "spec": self.raw_spec()}


class PodBuilder:
    """A worker pod as the API returns it (status included)."""

    def __init__(self, job: str = "cats", ordinal: int = 0, namespace: str = "default") -> None:
        self._pod: Obj = {
            "metadata": {"name": f"{workers(job)}-{ordinal}", "namespace": namespace,
                         "labels": labels(job, "worker"), "annotations": {ATTEMPT_ANNOTATION: "0"}},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Pending"},
        }

    def attempt(self, n: int) -> PodBuilder:
        self._pod["metadata"]["annotations"][ATTEMPT_ANNOTATION] = str(n)
        return self

    def uid(self, uid: str) -> PodBuilder:
        self._pod["metadata"]["uid"] = uid
        return self

    def node(self, name: str) -> PodBuilder:
        self._pod["spec"]["nodeName"] = name
        return self

    def running(self) -> PodBuilder:
        self._pod["status"] = {"phase": "Running", "containerStatuses": [
            {"name": "worker", "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}
        return self

    def waiting(self, reason: str, message: str = "") -> PodBuilder:
        self._pod["status"] = {"phase": "Pending", "containerStatuses": [
            {"name": "worker", "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}}]}
        return self

    def scheduled(self, at: str) -> PodBuilder:
        """The scheduler bound it at `at` (call after the state builders, which reset status)."""
        self._pod["status"].setdefault("conditions", []).append(
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": at})
        return self

    def crashed(self, exit_code: int = 1, message: str = "", reason: str = "Error",
                finished: str = "2026-01-01T00:05:00Z", restarted: bool = True) -> PodBuilder:
        """Exited; with `restarted` kubelet already restarted it (the failure is in lastState)."""
        term = {"exitCode": exit_code, "reason": reason, "message": message, "finishedAt": finished}
        status: Obj = {"name": "worker", "restartCount": 1 if restarted else 0}
        if restarted:
            status.update(state={"running": {}}, lastState={"terminated": term})
        else:
            status.update(state={"terminated": term})
        self._pod["status"] = {"phase": "Running", "containerStatuses": [status]}
        return self

    def unschedulable(self, message: str) -> PodBuilder:
        """Not bound: the scheduler could not place it and said why."""
        self._pod["spec"].pop("nodeName", None)
        self._pod["status"] = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}
        return self

    def deleted(self, at: str = "2026-01-01T00:06:00Z") -> PodBuilder:
        self._pod["metadata"]["deletionTimestamp"] = at
        return self

    def disrupted(self, message: str = "Eviction API: evicting", reason: str = "EvictionByEvictionAPI") -> PodBuilder:
        self._pod["status"].setdefault("conditions", []).append(
            {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message})
        return self

    def evicted_by_kubelet(self) -> PodBuilder:
        self._pod["status"] = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}
        return self

    def obj(self) -> Obj:
        return copy.deepcopy(self._pod)


def gang(job: str, nodes: int, attempt: int = 0) -> list[PodBuilder]:
    return [PodBuilder(job, i).attempt(attempt) for i in range(nodes)]
