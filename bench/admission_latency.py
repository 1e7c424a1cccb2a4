"""Admission latency: from quota becoming free to every pod of the next job bound, kubeinfer vs JobSet.

One fresh local control plane (GenericWorkload on), the real Kueue manager (built from the Go module
proxy) with its JobSet integration, the JobSet controller and kubeinfer-operator (Kueue integration
on) as local processes, and two nodes registered and kept Ready by this script (no kubelet: pods are
bound, never run). Each system has its own ClusterQueue with quota for one job of `--workers` pods
(500m CPU each). Each
round, for each system in turn: job X is admitted and bound, job Y waits in the queue; X is deleted
(its Workload goes with it, and Kueue admits Y); measured here, from watch events:

* free -> bound: from X's delete request to the last of Y's pods bound (spec.nodeName set);
* admitted -> bound: from Y's Workload turning Admitted to its last pod bound (the controller's part:
  kubeinfer creates its 7 children, a PodGroup and the StatefulSet; JobSet unsuspends, then its Jobs);
* admitted -> created: the same to the last of Y's pods created (the controllers alone, no scheduler).

kubeinfer's workers are gang-scheduled (a PodGroup per attempt), JobSet's are not. The JobSets are
created suspended (what Kueue's JobSet webhook would do; no webhook for JobSets is registered).
Writes bench/results/admission.json and admission.md. Not a test: figures, not assertions.

    python bench/admission_latency.py [--rounds 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from operator_scale import install_crd, jobset_crd, new_namespace, start_jobset, start_operator
from scale_support import machine, percentile

from localcluster.binaries import binary, log_tail, read_versions, stop_pidfile
from localcluster.controlplane import ControlPlane
from localcluster.kueue import KueueManager
from localcluster.node_agent.kube import Kube
from localcluster.node_agent.node import NodeHeartbeat, node_capacity

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
IMAGE = "bench.invalid/never-pulled:0"
CPU = "500m"
NODES = ("bench-node-1", "bench-node-2")
Obj = dict[str, Any]


class FakeNodes(threading.Thread):
    """Nodes that stay Ready (Lease and status renewed every 2 s) so the scheduler binds pods to them."""

    def __init__(self, plane: ControlPlane) -> None:
        super().__init__(daemon=True, name="fake-nodes")
        kube = Kube(str(plane.admin_kubeconfig))
        capacity = node_capacity("64", "256Gi", 0, 500)
        self.hearts = [NodeHeartbeat(kube, n, capacity, {}, "10.244.0.1", "v1.37.2", 10) for n in NODES]
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(2.0):
            for heart in self.hearts:
                heart.beat()

    def start_ready(self) -> FakeNodes:
        for heart in self.hearts:
            heart.register()
        self.start()
        return self


class Watcher(threading.Thread):
    """First time (monotonic) each job's pods are bound and each job's Workload is Admitted."""

    def __init__(self, api: Any, namespace: str, job_label: str) -> None:
        super().__init__(daemon=True, name=f"watch-{namespace}")
        self.api, self.namespace, self.job_label = api, namespace, job_label
        self.bound: dict[str, dict[str, float]] = {}  # job -> pod -> when bound
        self.created: dict[str, dict[str, float]] = {}  # job -> pod -> when first seen
        self.admitted: dict[str, float] = {}  # job (the Workload's owner) -> when Admitted
        self.lock = threading.Lock()
        self.streams: list[watch.Watch] = []

    def run(self) -> None:
        threads = [threading.Thread(target=f, daemon=True) for f in (self._pods, self._workloads)]
        for t in threads:
            t.start()

    def _pods(self) -> None:
        stream = watch.Watch()
        self.streams.append(stream)
        for event in stream.stream(client.CoreV1Api(self.api).list_namespaced_pod, self.namespace):
            pod = (event or {}).get("object")
            job = (pod.metadata.labels or {}).get(self.job_label) if pod else None
            if not job:
                continue
            with self.lock:
                self.created.setdefault(job, {}).setdefault(pod.metadata.name, time.monotonic())
                if pod.spec.node_name:
                    self.bound.setdefault(job, {}).setdefault(pod.metadata.name, time.monotonic())

    def _workloads(self) -> None:
        stream = watch.Watch()
        self.streams.append(stream)
        custom = client.CustomObjectsApi(self.api)
        for event in stream.stream(custom.list_namespaced_custom_object, "kueue.x-k8s.io", "v1beta2",
                                   self.namespace, "workloads"):
            wl = (event or {}).get("object")
            if not isinstance(wl, dict):
                continue
            owner = next((r["name"] for r in wl["metadata"].get("ownerReferences") or []), None)
            admitted = any(c["type"] == "Admitted" and c["status"] == "True"
                           for c in (wl.get("status") or {}).get("conditions") or [])
            if owner and admitted:
                with self.lock:
                    self.admitted.setdefault(owner, time.monotonic())

    def all_bound(self, job: str, count: int) -> float | None:
        with self.lock:
            times = self.bound.get(job, {})
            return max(times.values()) if len(times) >= count else None

    def all_created(self, job: str) -> float:
        with self.lock:
            return max(self.created[job].values())

    def stop(self) -> None:
        for stream in self.streams:
            stream.stop()


def wait(check: Any, what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def di(name: str, workers: int) -> Obj:
    spec = {"model": {"uri": "s3://models/tiny-flux"}, "inputs": {"prompts": ["a red fox"]},
            "workers": {"nodes": workers, "resources": {"requests": {"cpu": CPU, "memory": "1Gi"}}},
            "output": {"uri": f"s3://outputs/bench/{name}/"}}
    return {"apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference",
            "metadata": {"name": name, "labels": {"kueue.x-k8s.io/queue-name": "bench"}}, "spec": spec}


def jobset(name: str, workers: int) -> Obj:
    """The JobSet twin of a `workers`-node job, suspended with the queue label (Kueue's webhook's work)."""
    pod = {"restartPolicy": "OnFailure", "containers": [{"name": "worker", "image": IMAGE, "command": ["sleep", "inf"],
                                                         "resources": {"requests": {"cpu": CPU, "memory": "1Gi"}}}]}
    job = {"parallelism": workers, "completions": workers, "completionMode": "Indexed", "backoffLimit": 0,
           "template": {"spec": pod}}
    spec = {"suspend": True, "successPolicy": {"operator": "All"},
            "startupPolicy": {"startupPolicyOrder": "AnyOrder"},
            "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
            "replicatedJobs": [{"name": "workers", "replicas": 1, "template": {"spec": job}}]}
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": name, "labels": {"kueue.x-k8s.io/queue-name": "bench"}}, "spec": spec}


SYSTEMS = {
    "kubeinfer": ("kubeinfer.io", "v1alpha1", "distributedinferences", di, "kubeinfer.io/job-name"),
    "jobset": ("jobset.x-k8s.io", "v1alpha2", "jobsets", jobset, "jobset.sigs.k8s.io/jobset-name"),
}


def kueue_objects(api: Any, namespace: str, workers: int) -> None:
    """A ClusterQueue per system (named after its namespace) with quota for one job, and its LocalQueue: the
    last job of one system keeps its quota, and must not hold the other system's first job back."""
    custom = client.CustomObjectsApi(api)
    group, version = "kueue.x-k8s.io", "v1beta2"
    quota = [{"name": "cpu", "nominalQuota": str(workers * 0.5)}, {"name": "memory", "nominalQuota": f"{workers}Gi"}]
    for plural, body in (
        ("resourceflavors", {"kind": "ResourceFlavor", "metadata": {"name": "bench"}}),
        ("clusterqueues", {"kind": "ClusterQueue", "metadata": {"name": namespace}, "spec": {
            "namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu", "memory"],
                                                         "flavors": [{"name": "bench", "resources": quota}]}]}}),
    ):
        try:
            custom.create_cluster_custom_object(group, version, plural, {"apiVersion": f"{group}/{version}", **body})
        except client.ApiException as err:
            if err.status != 409:
                raise
    custom.create_namespaced_custom_object(group, version, namespace, "localqueues", {
        "apiVersion": f"{group}/{version}", "kind": "LocalQueue", "metadata": {"name": "bench"},
        "spec": {"clusterQueue": namespace}})


def dump(kubeconfig: Path, namespace: str, kinds: str) -> str:
    """The namespace's objects as YAML (the tail), for a round that never got its pods bound."""
    argv = [str(binary("kubectl")), f"--kubeconfig={kubeconfig}", "-n", namespace, "get", kinds, "-o", "yaml"]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout[-12000:]


def measure(api: Any, kubeconfig: Path, system: str, args: argparse.Namespace) -> Obj:
    group, version, plural, manifest, label = SYSTEMS[system]
    namespace = f"bench-{system}"
    new_namespace(api, namespace)
    kueue_objects(api, namespace, args.workers)
    watcher = Watcher(api, namespace, label)
    watcher.start()
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    rounds: list[Obj] = []
    try:
        holder = "r0"
        custom.create_namespaced_custom_object(group, version, namespace, plural, manifest(holder, args.workers))
        try:
            wait(lambda: watcher.all_bound(holder, args.workers), f"{system} {holder} bound", 120)
        except TimeoutError:
            print(dump(kubeconfig, namespace, f"{plural}.{group},workloads.kueue.x-k8s.io,jobs,pods"), flush=True)
            raise
        for i in range(1, args.rounds + 1):
            waiting = f"r{i}"
            custom.create_namespaced_custom_object(group, version, namespace, plural, manifest(waiting, args.workers))
            time.sleep(args.settle)  # the waiting job's Workload exists and is pending, nothing else moves
            assert watcher.all_bound(waiting, 1) is None, f"{system} {waiting} was bound while the quota was full"
            freed = time.monotonic()
            custom.delete_namespaced_custom_object(group, version, namespace, plural, holder)
            done = wait(lambda w=waiting: watcher.all_bound(w, args.workers), f"{system} {waiting} bound", 120)
            admitted = watcher.admitted.get(waiting, done)
            rounds.append({"free_to_bound_s": done - freed, "admitted_to_bound_s": done - admitted,
                           "free_to_admitted_s": admitted - freed,
                           "admitted_to_created_s": watcher.all_created(waiting) - admitted})
            print(f"[admission] {system} round {i}: {json.dumps(rounds[-1])}", flush=True)
            for pod in core.list_namespaced_pod(namespace, label_selector=f"{label}={holder}").items:
                core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
            holder = waiting
    finally:
        watcher.stop()
    return {"rounds": rounds, **{f"{key}_{q}": percentile([r[key] for r in rounds], pct)
                                 for key in ("free_to_bound_s", "admitted_to_bound_s", "free_to_admitted_s",
                                             "admitted_to_created_s")
                                 for q, pct in (("p50", 50), ("max", 100))}}


def run(args: argparse.Namespace) -> Obj:
    results: Obj = {"machine": machine(), "rounds": args.rounds, "workers": args.workers,
                    "versions": read_versions(), "systems": {}}
    workdir = Path(args.workdir)
    with ControlPlane(workdir / "controlplane") as plane, plane.api_client() as api:
        install_crd(api, REPO / "crds" / "distributedinferences.kubeinfer.io.yaml")
        install_crd(api, jobset_crd())
        nodes = FakeNodes(plane).start_ready()
        kueue = KueueManager(plane, workdir / "kueue", frameworks=("batch/job", "jobset.x-k8s.io/jobset")).start()
        kubeinfer = start_operator(plane, workdir, {"KUBEINFER_KUEUE_ENABLED": "true"})
        started = [start_jobset(plane, workdir), kubeinfer]
        try:
            for system in SYSTEMS:
                print(f"[admission] {system}: {args.rounds} rounds of {args.workers} workers", flush=True)
                results["systems"][system] = measure(api, plane.admin_kubeconfig, system, args)
        finally:
            for pid_file, exe in started:
                stop_pidfile(pid_file, exe)
            kueue.stop()
            nodes.stopped.set()
            for name in ("kubeinfer-operator", "jobset-controller", "kueue"):
                print(f"--- {name}.log (tail) ---\n{log_tail(plane.logs / f'{name}.log', 10)}", flush=True)
    ki, js = results["systems"]["kubeinfer"], results["systems"]["jobset"]
    results["ratio_free_to_bound_p50"] = ki["free_to_bound_s_p50"] / js["free_to_bound_s_p50"]
    results["ratio_admitted_to_bound_p50"] = ki["admitted_to_bound_s_p50"] / js["admitted_to_bound_s_p50"]
    return results


def render(results: Obj) -> str:
    ki, js = results["systems"]["kubeinfer"], results["systems"]["jobset"]
    rows = [("quota free -> all pods bound, p50 s", "free_to_bound_s_p50"),
            ("quota free -> all pods bound, max s", "free_to_bound_s_max"),
            ("Kueue admitted -> all pods bound, p50 s", "admitted_to_bound_s_p50"),
            ("Kueue admitted -> all pods bound, max s", "admitted_to_bound_s_max"),
            ("quota free -> Kueue admitted, p50 s", "free_to_admitted_s_p50"),
            ("Kueue admitted -> all pods created, p50 s", "admitted_to_created_s_p50")]
    m = results["machine"]
    lines = ["# Admission latency: kubeinfer vs JobSet under Kueue", "",
             f"{m.get('cpu', '')}, {m.get('cores', '')} cores; Kubernetes {results['versions']['KUBERNETES_VERSION']}, "
             f"Kueue {results['versions']['KUEUE_VERSION']}, JobSet {results['versions']['JOBSET_VERSION']}. "
             f"{results['rounds']} rounds of {results['workers']}-worker jobs per system.", "",
             "| measure | kubeinfer | JobSet | kubeinfer / JobSet |", "| --- | --- | --- | --- |"]
    for title, key in rows:
        ratio = ki[key] / js[key] if js[key] else float("nan")
        lines.append(f"| {title} | {ki[key]:.3f} | {js[key]:.3f} | {ratio:.2f} |")
    return "\n".join(lines) + "\n\n" + __doc__.split("\n\n", 1)[1].split("\n    python")[0] + "\n"


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # every finally stops its process


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds a waiting job waits before the free")
    parser.add_argument("--workdir", default="", help="keep logs here (default: a temp dir, removed)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupted)
    keep = bool(args.workdir)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="kubeinfer-admission-")
    try:
        results = run(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "admission.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "admission.md").write_text(render(results))
        print(render(results), flush=True)
    finally:
        if not keep:
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
