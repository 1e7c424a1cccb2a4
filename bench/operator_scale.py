"""Operator scale: N DistributedInference jobs through kubeinfer-operator vs N JobSets through JobSet.

One fresh local control plane (tests/localcluster: etcd, kube-apiserver, controller-manager,
scheduler) and no nodes, so pods are created but never run. Each system in turn: start its
controller as a local process with the admin kubeconfig, create N objects at a fixed rate, and
measure on this side, from watch events:

* throughput: N / (first create sent -> last job's last child seen);
* p50/p99 create -> first child and create -> last child (all children created): ConfigMap and
  StatefulSet for kubeinfer (which creates its 7 children in one pass, StatefulSet last); headless
  Service and Job for JobSet;
* the controller's peak RSS (VmRSS of its process tree sampled every 0.2 s, and VmHWM).

Writes bench/results/scale.json and scale.md. Not a test: figures, not assertions.

    python bench/operator_scale.py [--count 1000] [--rate 20] [--settle 30] [--only kubeinfer|jobset]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from scale_support import (
    ChildWatch,
    ListFn,
    RssSampler,
    apiserver_counters,
    by_tenth,
    count_log_lines,
    counter_delta,
    create_paced,
    http_ok,
    last_of,
    latency_stats,
    machine,
    wait_all,
    write_reports,
)

from localcluster.binaries import binary, cache_dir, free_port, log_tail, read_versions, spawn, stop_pidfile, wait_until
from localcluster.certs import CertificateAuthority
from localcluster.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
WORKER_IMAGE = "bench.invalid/never-pulled:0"
REQUESTS = {"cpu": "500m", "memory": "1Gi"}
Obj = dict[str, Any]


@dataclass
class System:
    """What differs between the two runs: objects, controller, watched and expected children."""

    name: str
    process: str  # its log is <control plane logs>/<process>.log
    namespace: str
    owner_kind: str
    group: str
    version: str
    plural: str
    manifest: Callable[[str, str], Obj]
    start: Callable[[ControlPlane, Path], tuple[Path, Path]]  # -> (pid file, exe), once ready
    first_child: str
    last_child: str
    expected: dict[str, int]  # kind -> children per job when all exist
    log_needles: tuple[str, ...]


def di_manifest(name: str, namespace: str) -> Obj:
    """A small valid 2-node CPU job (data parallel, 2 prompts); its workers never start."""
    spec = {"model": {"uri": "s3://models/tiny-flux", "dtype": "float32"},
            "task": {"type": "text-to-image", "parameters": {"num_inference_steps": 2, "height": 32, "width": 32}},
            "inputs": {"prompts": ["a red fox in the snow", "a lighthouse at dusk"]},
            "strategy": {"type": "data"},
            "workers": {"nodes": 2, "gpusPerNode": 0, "resources": {"requests": REQUESTS}},
            "output": {"uri": f"s3://outputs/bench/{name}/", "format": "png"}}
    return {"apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def jobset_manifest(name: str, namespace: str) -> Obj:
    """The JobSet twin of a 2-node job: one replicatedJob, one indexed Job of 2 pods, DNS hostnames.

    No webhooks run, so the defaults JobSet's mutating webhook would add are written out here.
    """
    pod = {"restartPolicy": "OnFailure",
           "containers": [{"name": "worker", "image": WORKER_IMAGE, "command": ["sleep", "infinity"],
                           "resources": {"requests": REQUESTS}}]}
    job = {"parallelism": 2, "completions": 2, "completionMode": "Indexed", "backoffLimit": 0,
           "template": {"spec": pod}}
    spec = {"successPolicy": {"operator": "All"}, "startupPolicy": {"startupPolicyOrder": "AnyOrder"},
            "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
            "replicatedJobs": [{"name": "workers", "replicas": 1, "template": {"spec": job}}]}
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def start_operator(plane: ControlPlane, workdir: Path, extra_env: dict[str, str] | None = None) -> tuple[Path, Path]:
    """kubeinfer-operator as a local process on the admin kubeconfig, watching all namespaces."""
    port = free_port()
    script = Path(sys.executable).parent / "kubeinfer-operator"
    tuning = {k: v for k, v in os.environ.items() if k.startswith("KUBEINFER_")}  # e.g. RECONCILE_THREADS
    env = {**plane.env(), **tuning, "KUBEINFER_WORKER_IMAGE": WORKER_IMAGE, "KUBEINFER_METRICS_PORT": "0",
           **(extra_env or {})}
    # The interpreter is argv[0], so stop_pidfile recognises the process as ours.
    spawn("kubeinfer-operator", [sys.executable, script, "--all-namespaces",
                                 f"--liveness=http://127.0.0.1:{port}/healthz"], plane.logs, env=env)
    log = plane.logs / "kubeinfer-operator.log"
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), "kubeinfer-operator", 90, log)
    return plane.logs / "kubeinfer-operator.pid", Path(sys.executable)


def start_jobset(plane: ControlPlane, workdir: Path) -> tuple[Path, Path]:
    """jobset-controller out of cluster: no cert rotation, webhooks served but never registered."""
    certs = workdir / "jobset-certs"
    CertificateAuthority(certs).issue("tls", "jobset-webhook", dns_names=("localhost",),
                                      ip_addresses=("127.0.0.1",), server=True)
    probe = free_port()
    config = {"apiVersion": "config.jobset.x-k8s.io/v1alpha1", "kind": "Configuration",
              "leaderElection": {"leaderElect": False},
              # Cert rotation writes a Secret and patches webhook configurations of an in-cluster install.
              "internalCertManagement": {"enable": False},
              "webhook": {"host": "127.0.0.1", "port": free_port(), "certDir": str(certs)},
              "health": {"healthProbeBindAddress": f"127.0.0.1:{probe}"}}
    (workdir / "jobset-config.yaml").write_text(yaml.safe_dump(config))
    exe = binary("jobset-controller")
    spawn("jobset-controller", [exe, f"--config={workdir / 'jobset-config.yaml'}", "--metrics-bind-address=0",
                                "--zap-devel=false"], plane.logs, env=plane.env())
    log = plane.logs / "jobset-controller.log"
    wait_until(lambda: http_ok(f"http://127.0.0.1:{probe}/readyz"), "jobset-controller", 90, log)
    return plane.logs / "jobset-controller.pid", exe


def jobset_crd() -> Path:
    """JobSet's CRD from the module the controller was built from (Go module cache)."""
    version = read_versions()["JOBSET_VERSION"]
    path = cache_dir() / "go" / "mod" / f"sigs.k8s.io/jobset@{version}" / "config/components/crd/bases"
    crd = path / "jobset.x-k8s.io_jobsets.yaml"
    if not crd.exists():
        raise FileNotFoundError(f"{crd} is missing: run `bash hack/build-tools.sh jobset`")
    return crd


SYSTEMS = {
    "kubeinfer": System(
        name="kubeinfer", process="kubeinfer-operator", namespace="bench-kubeinfer",
        owner_kind="DistributedInference", group="kubeinfer.io", version="v1alpha1", plural="distributedinferences",
        manifest=di_manifest, start=start_operator, first_child="ConfigMap", last_child="StatefulSet",
        expected={"ConfigMap": 2, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "Service": 1, "StatefulSet": 1},
        log_needles=("ERROR", "Traceback", "reconcile failed", "WARNING", "Connection pool is full")),
    "jobset": System(
        name="jobset", process="jobset-controller", namespace="bench-jobset",
        owner_kind="JobSet", group="jobset.x-k8s.io", version="v1alpha2", plural="jobsets",
        manifest=jobset_manifest, start=start_jobset, first_child="Service", last_child="Job",
        expected={"Service": 1, "Job": 1},
        log_needles=('"level":"error"', "the object has been modified", "panic")),
}


def listers(api: Any) -> dict[str, ListFn]:
    core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    return {"ConfigMap": core.list_namespaced_config_map, "Service": core.list_namespaced_service,
            "ServiceAccount": core.list_namespaced_service_account, "Pod": core.list_namespaced_pod,
            "Role": rbac.list_namespaced_role, "RoleBinding": rbac.list_namespaced_role_binding,
            "StatefulSet": apps.list_namespaced_stateful_set, "Job": batch.list_namespaced_job}


def install_crd(api: Any, path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(body)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(body["metadata"]["name"])
        conditions = crd.status.conditions if crd.status else None
        return any(c.type == "Established" and c.status == "True" for c in conditions or [])

    wait_until(established, f"CRD {body['metadata']['name']}", 60)


def new_namespace(api: Any, name: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods need the default ServiceAccount (JobSet's) or the job's own (ours): wait for the controller.
    wait_until(lambda: core.read_namespaced_service_account("default", name) is not None, f"SA in {name}", 60)


def children_complete(api: Any, system: System, names: list[str]) -> dict[str, int]:
    """At the end: how many jobs have every expected child, and how many pods exist."""
    lists = listers(api)
    have: dict[str, dict[str, int]] = {}
    for kind in system.expected:
        items = json.loads(lists[kind](system.namespace, _preload_content=False).data)["items"]
        for item in items:
            for ref in item["metadata"].get("ownerReferences") or []:
                if ref.get("kind") == system.owner_kind:
                    per = have.setdefault(ref["name"], {})
                    per[kind] = per.get(kind, 0) + 1
    full = sum(1 for n in names if all(have.get(n, {}).get(k, 0) >= c for k, c in system.expected.items()))
    pods = len(json.loads(lists["Pod"](system.namespace, _preload_content=False).data)["items"])
    return {"jobs_with_all_children": full, "pods": pods}


def measure(api: Any, plane: ControlPlane, system: System, args: argparse.Namespace) -> Obj:
    """Run one system end to end and return its figures; the controller is always stopped."""
    new_namespace(api, system.namespace)
    lists = listers(api)
    watches = [ChildWatch(k, lists[k], system.namespace, system.owner_kind).start_and_wait()
               for k in (system.first_child, system.last_child)]
    counters = functools.partial(apiserver_counters, plane.server_url, plane.ca_file, plane.pki / "admin")
    pid_file, exe = system.start(plane, Path(args.workdir))
    try:
        rss = RssSampler(int(pid_file.read_text())).start()
        time.sleep(2.0)
        idle_kib = rss.sample()
        names = [f"bench-{i:05d}" for i in range(args.count)]
        custom = client.CustomObjectsApi(api)

        def create(name: str) -> None:
            custom.create_namespaced_custom_object(system.group, system.version, system.namespace,
                                                   system.plural, system.manifest(name, system.namespace))

        before, began, own = counters(), time.monotonic(), sum(w.requests for w in watches)
        sent, create_errors = create_paced(create, names, args.rate)
        created_s = time.monotonic() - began
        done = wait_all(names, lambda: last_of(watches), args.timeout)
        finished, at_done = time.monotonic(), counters()
        # The bench's own requests in the window: creates, watch reconnects, one metrics scrape.
        own = args.count + sum(w.requests for w in watches) - own + 1
        time.sleep(args.settle)  # one resync period more: steady-state memory, load and errors count too
        after, settled = counters(), time.monotonic()
        peak_kib = rss.stop()
        # Counted before the stop: a stopping kopf warns once per cancelled daemon.
        log = count_log_lines(plane.logs / f"{system.process}.log", system.log_needles)
    finally:
        stop_pidfile(pid_file, exe)
        for watch in watches:
            watch.stop()
    return summarize(system, sent, watches, {
        "all_children_seen_in_time": done, "create_errors": create_errors[:10],
        "create_error_count": len(create_errors), "create_seconds": created_s,
        "wait_seconds": finished - began, "idle_rss_mib": idle_kib / 1024, "peak_rss_mib": peak_kib / 1024,
        "requests_until_done": counter_delta(before, at_done), "bench_requests_until_done": own,
        "requests_per_s_settled": {k: v / (settled - finished) for k, v in counter_delta(at_done, after).items()},
        "log": log,
        "watch_errors": [e for w in watches for e in w.errors][:10],
        **children_complete(api, system, names)})


def summarize(system: System, sent: dict[str, float], watches: list[ChildWatch], extra: Obj) -> Obj:
    first, last = watches[0].first_seen, last_of(watches)
    start = min(sent.values())
    end = max((last[n] for n in sent if n in last), default=start)
    done = sum(1 for n in sent if n in last)
    own = extra["requests_until_done"]
    return {"system": system.name, "count": len(sent), "jobs_done": done,
            "throughput_jobs_per_s": done / max(end - start, 1e-9),
            "achieved_create_rate": (len(sent) - 1) / max(max(sent.values()) - start, 1e-9),
            "first_child": system.first_child, "last_child": system.last_child,
            "create_to_first_child": latency_stats(sent, first),
            "create_to_last_child": latency_stats(sent, last),
            "last_child_p50_s_by_tenth": by_tenth(sent, last),
            # The controller and this bench are the only admin (exempt) clients.
            "controller_requests_per_job": (own.get("flow:exempt", 0) - extra["bench_requests_until_done"])
            / max(len(sent), 1),
            "all_requests_per_job": own.get("total", 0) / max(len(sent), 1), **extra}


def clear_namespace(api: Any, system: System, timeout: float = 600) -> float:
    """Delete the namespace (finalizers of our stopped operator stripped first); seconds it took."""
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    began = time.monotonic()
    items: Any = custom.list_namespaced_custom_object(system.group, system.version, system.namespace, system.plural)
    for item in items["items"]:
        if item["metadata"].get("finalizers"):
            custom.patch_namespaced_custom_object(system.group, system.version, system.namespace, system.plural,
                                                  item["metadata"]["name"], {"metadata": {"finalizers": None}})
    core.delete_namespace(system.namespace)

    def gone() -> bool:
        return not any(n.metadata and n.metadata.name == system.namespace for n in core.list_namespace().items)

    wait_until(gone, f"namespace {system.namespace} deleted", timeout)
    return time.monotonic() - began


def run(args: argparse.Namespace) -> Obj:
    results: Obj = {"machine": machine(), "count": args.count, "rate": args.rate, "settle_s": args.settle,
                    "note": args.note,
                    "versions": read_versions(), "systems": {}}
    with ControlPlane(Path(args.workdir) / "controlplane") as plane, plane.api_client() as api:
        install_crd(api, REPO / "crds" / "distributedinferences.kubeinfer.io.yaml")
        install_crd(api, jobset_crd())
        for key in ("kubeinfer", "jobset"):
            if args.only in (None, key):
                system = SYSTEMS[key]
                print(f"[scale] {key}: {args.count} objects at {args.rate}/s", flush=True)
                results["systems"][key] = measure(api, plane, system, args)
                print(json.dumps(results["systems"][key], indent=1), flush=True)
                if args.only is None and key == "kubeinfer":
                    results["systems"][key]["namespace_cleanup_s"] = clear_namespace(api, system)
        for system in SYSTEMS.values():
            log = plane.logs / f"{system.process}.log"
            print(f"--- {log.name} (tail) ---\n{log_tail(log, 15)}", flush=True)
    return results


NOTES = """
- Children: kubeinfer creates 7 per job in one reconcile pass (progress and job ConfigMaps,
  ServiceAccount, Role, RoleBinding, headless Service, StatefulSet last); first child = ConfigMap,
  last = StatefulSet. JobSet creates a headless Service (first) then one indexed Job (last). Both
  counts are verified by listing at the end. The StatefulSet and Job controllers of
  kube-controller-manager then create 2 pods each on the same apiserver.
- Times are taken here: a create when its POST is sent, a child when its watch event arrives.
- RSS: VmRSS of the controller's process tree sampled every 0.2 s (and VmHWM), from its start
  until `settle` seconds after the last child (one resync period of the operator).
- JobSet runs out of cluster with `--config` (leaderElect false, internalCertManagement disabled:
  cert rotation manages an in-cluster Secret and webhook configurations) and
  `--metrics-bind-address=0`; its webhook server runs on a self-signed cert but no webhook
  configuration is installed, so the apiserver never calls it. The mutating webhook's defaults
  (successPolicy All, startupPolicy AnyOrder, Indexed completion, restartPolicy OnFailure,
  enableDNSHostnames and publishNotReadyAddresses true) are written into every JobSet explicitly.
- Both controllers use the admin kubeconfig and their defaults (JobSet: QPS/burst 500, one JobSet
  worker; kubeinfer: resync 30 s, 16 reconcile threads, metrics server off). Requests by the
  controller = the apiserver's `exempt` flow (admin identity) minus this bench's own (N creates,
  its watch calls). Steady state = the `settle` window after the last child.
- The kubeinfer run goes first; its namespace is deleted before the JobSet run.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="objects per system")
    parser.add_argument("--rate", type=float, default=20.0, help="creates per second")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to keep sampling after the last child")
    parser.add_argument("--timeout", type=float, default=0.0, help="wait for children (default: 600 s + N/rate)")
    parser.add_argument("--only", choices=sorted(SYSTEMS), default=None)
    parser.add_argument("--workdir", default="", help="keep logs here (default: a temp dir, removed)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--note", default="", help="a sentence for the report (e.g. the machine was shared)")
    args = parser.parse_args(argv)
    args.timeout = args.timeout or 600 + args.count / args.rate
    return args


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # SIGTERM (and SIGINT, even where a shell ignored it) unwind like Ctrl-C: every finally stops its process.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupted)
    keep = bool(args.workdir)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="kubeinfer-scale-")
    began = time.monotonic()
    try:
        results = run(args)
        results["wall_seconds"] = time.monotonic() - began
        write_reports(results, args.out, NOTES)
    finally:
        if not keep:
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
