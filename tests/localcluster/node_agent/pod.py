"""One pod's life on the node: sandbox, init containers, containers, restarts, termination."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import network, security, volumes
from .envvars import ConfigError, Lookup, command_line, container_env
from .process import ContainerProcess, Launch
from .status import ContainerRecord, container_status, now, pod_conditions, pod_phase, terminated_state
from .volumes import TokenIssuer

log = logging.getLogger(__name__)
Obj = dict[str, Any]
CONFIG_RETRY_SECONDS = 2.0


@dataclass
class Runtime:
    """What every pod runner shares: the node's identity and the agent's services."""

    node: str
    workdir: Path
    host_ip: str
    base_env: dict[str, str]
    node_capacity: dict[str, str]
    entrypoints: dict[str, list[str]]
    image_users: dict[str, tuple[int, int]]
    backoff_base: float
    backoff_max: float
    lookup: Lookup
    issue_token: TokenIssuer
    write_hosts: Callable[[PodRunner], None]
    # (pod, node, type, reason, message, container)
    record_event: Callable[[Obj, str, str, str, str, str | None], None]


class PodRunner:
    """Drives one pod toward its spec on each `sync`; never blocks."""

    def __init__(self, pod: Obj, rt: Runtime) -> None:
        self.rt = rt
        self.pod = pod
        meta, spec = pod["metadata"], pod["spec"]
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.netns = network.netns_name(rt.node, self.uid)
        self.dir = rt.workdir / "pods" / self.uid
        self.policy: str = spec.get("restartPolicy", "Always")
        self.pod_ip: str | None = None
        self.start_time = now()
        self.volume_paths: dict[str, str] | None = None
        self.sandbox_error = ""
        self.init_records = [self._record(c, "PodInitializing") for c in spec.get("initContainers", [])]
        waiting = "PodInitializing" if self.init_records else "ContainerCreating"
        self.records = [self._record(c, waiting) for c in spec["containers"]]
        self.procs: dict[str, ContainerProcess] = {}
        self.next_start: dict[str, float] = {}
        self.init_failed = False
        self.stopping = False
        self.finished = False  # terminal: nothing runs any more and nothing will restart

    def _event(self, etype: str, reason: str, message: str, container: str | None = None) -> None:
        self.rt.record_event(self.pod, self.rt.node, etype, reason, message, container)

    def _record(self, container: Obj, waiting: str) -> ContainerRecord:
        old = {s["name"]: s for s in self.pod.get("status", {}).get("containerStatuses", [])}
        restarts = int(old.get(container["name"], {}).get("restartCount", 0))
        return ContainerRecord(
            container["name"], container.get("image", ""), restart_count=restarts, waiting=(waiting, "")
        )

    # ---- the loop -------------------------------------------------------------------------

    def sync(self, pod: Obj | None) -> None:
        """Advance one step; `pod` is the latest object from the API (None once it is gone)."""
        if pod is not None:
            self.pod = pod
        self.reap()
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            self.stop(self._grace(pod))
            return
        if self.finished:
            return
        if self.pod_ip is None and not self._create_sandbox():
            return
        if not self.init_done:
            self._run_init()
        else:
            for container, rec in zip(self.pod["spec"]["containers"], self.records, strict=True):
                self._ensure_running(container, rec)
        if self._all_done():
            self._finish()

    @property
    def init_done(self) -> bool:
        return all(r.terminated is not None and r.terminated["exitCode"] == 0 for r in self.init_records)

    @property
    def stopped(self) -> bool:
        """True once no process of the pod runs any more."""
        return not self.procs

    def _grace(self, pod: Obj | None) -> float:
        if pod is None:
            return 2.0
        meta = pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds", pod["spec"].get("terminationGracePeriodSeconds", 30))
        return float(grace)

    def _create_sandbox(self) -> bool:
        try:
            self.pod_ip = network.create_pod_network(self.netns)
            self.rt.write_hosts(self)
            return True
        except Exception as err:
            self.sandbox_error = f"failed to create pod sandbox: {err}"
            self._event("Warning", "FailedCreatePodSandBox", self.sandbox_error)
            log.error("%s: %s", self.key, self.sandbox_error)
            network.delete_pod_network(self.netns)
            network.release_ip(self.netns)
            return False

    def _run_init(self) -> None:
        for container, rec in zip(self.pod["spec"].get("initContainers", []), self.init_records, strict=True):
            if rec.terminated is not None and rec.terminated["exitCode"] == 0:
                continue
            if self.init_failed:
                return
            self._ensure_running(container, rec, init=True)
            return

    def _ensure_running(self, container: Obj, rec: ContainerRecord, init: bool = False) -> None:
        """Start a container that has never run or whose restart is due."""
        if rec.name in self.procs or self.stopping:
            return
        if rec.terminated is not None and not rec.restarting:
            return
        if time.monotonic() < self.next_start.get(rec.name, 0.0):
            return
        try:
            launch = self._launch(container)
        except ConfigError as err:
            if rec.waiting != ("CreateContainerConfigError", str(err)):
                self._event("Warning", "Failed", f"Error: {err}", rec.name)
            rec.waiting = ("CreateContainerConfigError", str(err))
            self.next_start[rec.name] = time.monotonic() + CONFIG_RETRY_SECONDS
            return
        if rec.restarting:
            rec.last_terminated, rec.terminated, rec.restarting = rec.terminated, None, False
            rec.restart_count += 1
        self.procs[rec.name] = ContainerProcess(launch)
        rec.running_since = now()
        rec.container_id = f"kubeinfer-node-agent://{self.uid[:8]}-{rec.name}-{rec.restart_count}"
        self._event("Normal", "Started", f"Started container {rec.name}", rec.name)
        log.info("%s: started %s%s (pid %d)", self.key, "init " if init else "", rec.name, self.procs[rec.name].pid)

    def _launch(self, container: Obj) -> Launch:
        """Resolve env, volumes and command; ConfigError when the spec cannot run yet."""
        assert self.pod_ip is not None
        view = self.pod_view()
        if self.volume_paths is None:  # once per pod: running containers hold bind mounts of these dirs
            self.volume_paths = volumes.materialize(view, self.dir / "volumes", self.rt.lookup, self.rt.issue_token)
        hostname = view["spec"].get("hostname") or view["metadata"]["name"]
        base = {**self.rt.base_env, "HOSTNAME": hostname}
        env = container_env(view, container, self.rt.lookup, base, self.rt.node_capacity)
        argv = command_line(container, env, self.rt.entrypoints)
        mounts = volumes.container_mounts(container, self.volume_paths)
        for m in mounts:
            network.ensure_mount_target(m.target, is_file=Path(m.source).is_file())
        term_path = container.get("terminationMessagePath", "/dev/termination-log")
        network.ensure_mount_target(term_path, is_file=True)
        ns, name = view["metadata"]["namespace"], view["metadata"]["name"]
        return Launch(
            argv=argv,
            env=env,
            netns=self.netns,
            hostname=hostname,
            mounts=mounts,
            working_dir=container.get("workingDir"),
            log_path=self.rt.workdir / "logs" / f"{ns}_{name}_{container['name']}.log",
            termination_host_path=self.dir / "termination" / container["name"],
            termination_path=term_path,
            fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
            identity=security.identity(view, container, self.rt.image_users),
        )

    def pod_view(self) -> Obj:
        """The pod as the downward API sees it: with the IPs this agent assigned."""
        status = dict(self.pod.get("status", {}))
        if self.pod_ip:
            status.update(podIP=self.pod_ip, podIPs=[{"ip": self.pod_ip}])
        status.update(hostIP=self.rt.host_ip, hostIPs=[{"ip": self.rt.host_ip}])
        return {**self.pod, "status": status}

    def reap(self) -> None:
        """Collect exited processes and decide about restarts."""
        for rec in self.init_records + self.records:
            proc = self.procs.get(rec.name)
            if proc is None:
                continue
            code = proc.poll()
            if code is None:
                continue
            del self.procs[rec.name]
            start_error = proc.start_error()
            message = start_error or proc.termination_message(code)
            rec.terminated = terminated_state(code, message, rec.running_since, rec.container_id)
            if start_error:
                rec.terminated["reason"] = "StartError"
            rec.running_since = None
            log.info("%s: %s exited with %d", self.key, rec.name, code)
            self._after_exit(rec, code, is_init=rec in self.init_records)

    def _after_exit(self, rec: ContainerRecord, code: int, is_init: bool) -> None:
        restart = not self.stopping and (
            (self.policy == "Always" and not is_init) or (self.policy != "Never" and code != 0)
        )
        if is_init and code != 0 and self.policy == "Never":
            self.init_failed = True
        if not restart:
            return
        delay = (
            0.0
            if rec.restart_count == 0
            else min(self.rt.backoff_base * 2 ** (rec.restart_count - 1), self.rt.backoff_max)
        )
        rec.restarting = True
        self.next_start[rec.name] = time.monotonic() + delay
        if delay:
            self._event("Warning", "BackOff", f"Back-off restarting failed container {rec.name}", rec.name)
            rec.waiting = (
                "CrashLoopBackOff",
                f"back-off {delay:g}s restarting failed container={rec.name} "
                f"pod={self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}({self.uid})",
            )

    def _all_done(self) -> bool:
        if self.procs:
            return False
        if self.init_failed:
            return True
        everything = self.records if self.init_done else []
        return bool(everything) and all(r.terminated is not None and not r.restarting for r in everything)

    # ---- stopping ---------------------------------------------------------------------------

    def stop(self, grace: float) -> None:
        self.stopping = True
        for rec in self.init_records + self.records:
            rec.restarting = False
        for name, proc in self.procs.items():
            if not proc.stop_requested:
                self._event("Normal", "Killing", f"Stopping container {name}", name)
            proc.stop(grace)

    def _finish(self) -> None:
        """Terminal pod: release its network and volumes (kubelet tears the sandbox down too)."""
        self.finished = True
        self.release()

    def release(self) -> None:
        """Kill whatever is left and free the pod's network, IP and volumes."""
        for proc in self.procs.values():
            proc.stop(0)
        network.delete_pod_network(self.netns)
        network.release_ip(self.netns)
        volumes.release(self.dir)

    # ---- status -----------------------------------------------------------------------------

    def status(self) -> Obj:
        """The status fields this agent owns (conditions without timestamps)."""
        final = self.stopping and self.stopped
        phase = pod_phase(self.policy, self.init_done, self.init_failed, self.records, final)
        if self.sandbox_error and self.pod_ip is None:
            for rec in self.records:
                rec.waiting = ("ContainerCreating", self.sandbox_error)
        status: Obj = {
            "phase": phase,
            "conditions": pod_conditions(self.pod_ip is not None, self.init_done, self.records, phase),
            "hostIP": self.rt.host_ip,
            "hostIPs": [{"ip": self.rt.host_ip}],
            "startTime": self.start_time,
            "containerStatuses": [container_status(r) for r in self.records],
        }
        if self.pod_ip:
            status.update(podIP=self.pod_ip, podIPs=[{"ip": self.pod_ip}])
        if self.init_records:
            status["initContainerStatuses"] = [container_status(r) for r in self.init_records]
        return status
