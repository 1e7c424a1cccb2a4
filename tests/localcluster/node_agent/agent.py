"""The agent's loop: watch pods and services, run this node's pods, publish status and DNS."""

from __future__ import annotations

import copy
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import network
from .envvars import ConfigError, decode_secret
from .events import EventRecorder
from .hosts import hosts_file, resolv_conf, write_in_place
from .kube import ApiError, Informer, Kube
from .node import NodeHeartbeat, node_capacity
from .pod import PodRunner, Runtime
from .status import merge_conditions, status_drifted

log = logging.getLogger(__name__)
Obj = dict[str, Any]
TICK_SECONDS = 0.5
SHUTDOWN_GRACE_SECONDS = 5.0
DRIFT_REPAIR_SECONDS = 3.0


@dataclass
class AgentConfig:
    kubeconfig: str
    nodes: list[str]
    workdir: Path
    cpu: str = "8"
    memory: str = "32Gi"
    gpus: int = 0
    max_pods: int = 110
    api_host: str = network.HOST_IP
    api_port: int = 6443
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    entrypoints: dict[str, list[str]] = field(default_factory=dict)
    image_users: dict[str, tuple[int, int]] = field(default_factory=dict)
    lease_seconds: int = 10
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    version: str = "v1.37.2"


def base_env(cfg: AgentConfig) -> dict[str, str]:
    """What a container starts with before its own env: this interpreter's bin dir on PATH, in-cluster API."""
    bindir = os.path.dirname(sys.executable)
    host_path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    return {
        "PATH": f"{bindir}:{host_path}",
        "HOME": "/root",
        "KUBERNETES_SERVICE_HOST": cfg.api_host,
        "KUBERNETES_SERVICE_PORT": str(cfg.api_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(cfg.api_port),
        "KUBERNETES_PORT": f"tcp://{cfg.api_host}:{cfg.api_port}",
        **cfg.extra_env,
    }


class Agent:
    """Stand-in for kubelet + container runtime for one or more Nodes."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.kube = Kube(cfg.kubeconfig)
        self.capacity = node_capacity(cfg.cpu, cfg.memory, cfg.gpus, cfg.max_pods)
        self.hearts = [
            NodeHeartbeat(self.kube, n, self.capacity, cfg.labels, network.HOST_IP, cfg.version, cfg.lease_seconds,
                          cfg.taints)
            for n in cfg.nodes
        ]
        self.events = EventRecorder(self.kube)
        self.runtimes = {n: self._runtime(n) for n in cfg.nodes}
        self.runners: dict[str, PodRunner] = {}
        self.written: dict[str, Obj] = {}
        self.written_at: dict[str, float] = {}
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.pods = Informer(self.kube, "/api/v1/pods", self.wake.set)
        self.services = Informer(self.kube, "/api/v1/services", self.wake.set)

    def _runtime(self, node: str) -> Runtime:
        return Runtime(
            node=node,
            workdir=self.cfg.workdir,
            host_ip=network.HOST_IP,
            base_env=base_env(self.cfg),
            node_capacity=self.capacity,
            entrypoints=self.cfg.entrypoints,
            image_users=self.cfg.image_users,
            backoff_base=self.cfg.backoff_base,
            backoff_max=self.cfg.backoff_max,
            lookup=self.lookup,
            issue_token=self.issue_token,
            write_hosts=self.write_hosts,
            record_event=self.events.record,
        )

    # ---- services the pod runners use -------------------------------------------------------

    def lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        plural = {"ConfigMap": "configmaps", "Secret": "secrets"}[kind]
        obj = self.kube.get_or_none(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        if obj is None:
            return None
        if kind == "Secret":
            return decode_secret(obj.get("data") or {})
        return dict(obj.get("data") or {})

    def issue_token(self, namespace: str, sa: str, audiences: list[str], seconds: int, pod: Obj) -> str:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences,
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            },
        }
        try:
            answer = self.kube.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token", body)
        except ApiError as err:
            raise ConfigError(f"serviceAccountToken for serviceaccount {namespace}/{sa}: {err}") from err
        return str(answer["status"]["token"])

    def write_hosts(self, runner: PodRunner) -> None:
        if runner.pod_ip is None:
            return
        etc = network.ETC_NETNS / runner.netns
        pods, services = self.pods.snapshot(), self.services.snapshot()
        write_in_place(etc / "hosts", hosts_file(runner.pod, runner.pod_ip, pods, services))
        write_in_place(etc / "resolv.conf", resolv_conf(runner.pod["metadata"]["namespace"]))

    # ---- lifecycle --------------------------------------------------------------------------

    def run(self) -> None:
        """Register, then loop until SIGTERM/SIGINT sets `stop`; always clean up."""
        network.register_agent()
        try:
            for node in self.cfg.nodes:
                network.cleanup_leftovers(node)  # processes of a crashed earlier agent for this node
            self._register()
            self.pods.start()
            self.services.start()
            threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()
            while not self.stop.is_set():
                self.wake.wait(TICK_SECONDS)
                self.wake.clear()
                if self.pods.synced.is_set() and self.services.synced.is_set():
                    self.tick()
        finally:
            self.shutdown()

    def _register(self, timeout: float = 60.0) -> None:
        """Register every node, waiting for an apiserver that is still starting."""
        deadline = time.monotonic() + timeout
        for heart in self.hearts:
            while True:
                try:
                    heart.register()
                    break
                except Exception as err:
                    if time.monotonic() > deadline or self.stop.is_set():
                        raise
                    log.warning("registering node %s: %s (retrying)", heart.name, err)
                    self.stop.wait(1.0)

    def _heartbeats(self) -> None:
        interval = max(1.0, self.cfg.lease_seconds / 4)
        while not self.stop.wait(interval):
            for heart in self.hearts:
                try:
                    heart.beat()
                except Exception as err:
                    log.warning("heartbeat %s: %s", heart.name, err)

    def tick(self) -> None:
        by_uid = {p["metadata"]["uid"]: p for p in self.pods.snapshot()}
        for uid, pod in by_uid.items():
            if pod["spec"].get("nodeName") in self.runtimes and uid not in self.runners:
                self._admit(pod)
        for uid, runner in list(self.runners.items()):
            try:
                runner.sync(_fresher(runner.pod, by_uid.get(uid)))
                self.write_hosts(runner)
                self._publish(runner)
            except Exception:
                log.exception("%s: sync failed", runner.key)

    def _admit(self, pod: Obj) -> None:
        """Start tracking a newly bound pod; terminal or deleted leftovers only get their deletion finished."""
        terminal = pod.get("status", {}).get("phase") in ("Succeeded", "Failed")
        if terminal or pod["metadata"].get("deletionTimestamp"):
            if pod["metadata"].get("deletionTimestamp"):
                self._delete(pod)
            return
        node = pod["spec"]["nodeName"]
        self.runners[pod["metadata"]["uid"]] = PodRunner(pod, self.runtimes[node])
        log.info("admitted %s/%s on %s", pod["metadata"]["namespace"], pod["metadata"]["name"], node)

    def _publish(self, runner: PodRunner) -> None:
        """Write status when it changed (or someone else changed it); finish deletion once nothing runs."""
        status = runner.status()
        done = runner.stopping and runner.stopped
        changed = status != self.written.get(runner.uid)
        # e.g. the node-lifecycle controller set Ready=False while this agent was paused: repair it,
        # at most every few seconds in case the apiserver normalises a field differently
        drifted = status_drifted(runner.pod.get("status", {}), status) and (
            time.monotonic() - self.written_at.get(runner.uid, 0.0) > DRIFT_REPAIR_SECONDS
        )
        if (changed or drifted) and self._put_status(runner, status):
            self.written[runner.uid] = status
            self.written_at[runner.uid] = time.monotonic()
            log.debug("%s: status written (%s)", runner.key, "changed" if changed else "repaired")
        if done:
            runner.release()  # sandbox first: once the pod is gone from the API nothing of it remains
            if runner.pod["metadata"].get("deletionTimestamp"):
                self._delete(runner.pod)
            self.runners.pop(runner.uid, None)
            self.written.pop(runner.uid, None)
            self.written_at.pop(runner.uid, None)

    def _put_status(self, runner: PodRunner, status: Obj) -> bool:
        meta = runner.pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        pod = runner.pod
        for _ in range(3):
            body = copy.deepcopy(pod)
            old = body.get("status", {})
            body["status"] = {
                **old,
                **status,
                "conditions": merge_conditions(old.get("conditions") or [], status["conditions"]),
            }
            try:
                runner.pod = self.kube.put(path, body)
                return True
            except ApiError as err:
                if err.status == 404:
                    return True
                if err.status != 409:
                    raise
                fresh = self.kube.get_or_none(path.removesuffix("/status"))
                if fresh is None or fresh["metadata"]["uid"] != runner.uid:
                    return True
                pod = fresh
        return False

    def _delete(self, pod: Obj) -> None:
        """Finish a graceful deletion, as kubelet does once the containers are gone."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            self.kube.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
        except ApiError as err:
            if err.status not in (404, 409):
                raise

    def shutdown(self) -> None:
        """Stop every pod (kubelet's graceful node shutdown), mark the nodes NotReady, free the network."""
        self.stop.set()
        self.pods.stop()
        self.services.stop()
        for runner in self.runners.values():
            runner.stop(SHUTDOWN_GRACE_SECONDS)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS + 2
        while any(not r.stopped for r in self.runners.values()) and time.monotonic() < deadline:
            for runner in self.runners.values():
                runner.reap()
            time.sleep(0.1)
        # kubelet's graceful node shutdown: the pod is Failed/Terminated whatever its exit codes, so its
        # controller replaces it (a Deployment's pod must not end Completed, which nothing restarts).
        shutdown = {"phase": "Failed", "reason": "Terminated",
                    "message": "Pod was terminated in response to node agent shutdown."}
        for runner in list(self.runners.values()):
            try:
                self._put_status(runner, {**runner.status(), **shutdown})
            except Exception as err:
                log.warning("%s: final status: %s", runner.key, err)
            runner.release()
        self.runners.clear()
        for heart in self.hearts:
            try:
                heart.beat(ready=False, reason="KubeletNotReady", message="node agent stopped")
            except Exception as err:
                log.warning("node %s: final status: %s", heart.name, err)
        network.unregister_agent()


def _fresher(known: Obj, cached: Obj | None) -> Obj | None:
    """The informer may lag behind our own status writes; keep the newer object (None = deleted)."""
    if cached is None:
        return None
    try:
        newer = int(cached["metadata"]["resourceVersion"]) >= int(known["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        newer = True
    return cached if newer else known
