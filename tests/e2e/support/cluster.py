"""`Cluster`: what an e2e test may do to a cluster, identical on the local cluster and on kind.

Tests talk only to this facade. Everything that differs between the two (how the operator image
is provided, where pod logs live, how a node is lost, how the S3 server is stopped) is a method of
a `Backend` (support/local.py, support/kind.py); nothing else in the suite knows which one runs.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

from kubeinfer_api import API_VERSION, KIND
from localcluster.node_agent.kube import Kube

Manifest = dict[str, Any]
REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "kubeinfer"
CRD_FILE = REPO / "crds" / "distributedinferences.kubeinfer.io.yaml"
OPERATOR_NAMESPACE = "kubeinfer-system"
RELEASE = "kubeinfer"
S3_SECRET = "s3-credentials"
#: Kinds read over HTTP in this process (the suite polls these thousands of times; a kubectl run costs 33 ms of
#: CPU, a request ~1 ms): kind (singular, lower case; the plural adds "s") -> API prefix. Others go through kubectl.
DIRECT_READS = {
    "distributedinference": f"/apis/{API_VERSION}",
    "pod": "/api/v1",
    "configmap": "/api/v1",
    "service": "/api/v1",
    "serviceaccount": "/api/v1",
    "statefulset": "/apis/apps/v1",
}


class Backend(Protocol):
    """The cluster-specific half (see module docstring)."""

    @property
    def name(self) -> str: ...
    @property
    def kubeconfig(self) -> Path: ...
    @property
    def kubectl_bin(self) -> str: ...
    @property
    def helm_bin(self) -> str: ...

    def chart_values(self) -> list[str]: ...  # `--set` pairs the cluster needs (images)
    def s3_client(self) -> Any: ...
    def s3_pod_env(self) -> dict[str, str]: ...  # the s3-credentials Secret as pods need it
    def s3_host_env(self) -> dict[str, str]: ...  # the same for processes on this host (reference runs)
    def container_log(self, namespace: str, pod: str, container: str) -> str: ...
    def kill_container(self, namespace: str, pod: str) -> None: ...  # SIGKILL its processes (a crash)
    def container_identity(self, namespace: str, pod: str) -> tuple[int, bool]: ...  # (uid, root read-only)
    def lose_node(self, node: str) -> None: ...  # power loss: the node's processes die, its lease stops
    def restore_node(self, node: str) -> None: ...
    def spare_node(self) -> str: ...  # a node no other test schedules onto, for lose_node
    def stop_s3(self) -> None: ...
    def start_s3(self) -> None: ...
    def log_files(self) -> list[Path]: ...  # component logs worth attaching to a failure


class Cluster:
    """kubectl/helm/S3 through one kubeconfig; waits that fail naming what they waited for."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._kube: Kube | None = None

    # -- plain commands --------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.backend.kubectl_bin, f"--kubeconfig={self.backend.kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = [self.backend.helm_bin, f"--kubeconfig={self.backend.kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def apply(
        self, manifest: Manifest | str, namespace: str, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> Manifest | None:
        """The object as a dict, or None when it does not exist."""
        path = self._direct_path(kind, namespace)
        if path is not None:
            return self._api.get_or_none(f"{path}/{name}")
        scope = ["-n", namespace] if namespace else []
        result = self.kubectl("get", kind, name, *scope, "-o", "json", "--ignore-not-found")
        return json.loads(result.stdout) if result.stdout.strip() else None

    def items(self, kind: str, namespace: str, selector: str = "") -> list[Manifest]:
        path = self._direct_path(kind, namespace)
        if path is not None:
            answer = self._api.get(path, **({"labelSelector": selector} if selector else {}))
            return [{"apiVersion": answer["apiVersion"], "kind": answer["kind"].removesuffix("List"), **item}
                    for item in answer["items"]]
        args = ["get", kind, "-n", namespace, "-o", "json", *(["-l", selector] if selector else [])]
        items: list[Manifest] = json.loads(self.kubectl(*args).stdout)["items"]
        return items

    def _direct_path(self, kind: str, namespace: str | None) -> str | None:
        """The collection's URL path when `kind` is one of DIRECT_READS (singular or plural, any case)."""
        singular = kind.lower().removesuffix("s")
        prefix = DIRECT_READS.get(singular)
        if prefix is None or namespace is None:
            return None
        return f"{prefix}/namespaces/{namespace}/{singular}s"

    @property
    def _api(self) -> Kube:
        if self._kube is None:
            self._kube = Kube(str(self.backend.kubeconfig))
        return self._kube

    def create_namespace(self, name: str) -> None:
        self.kubectl("create", "namespace", name)
        self.kubectl("label", "namespace", name, "kubeinfer-e2e=1")
        wait_for(lambda: self.get("serviceaccount", "default", name), f"default service account in {name}", 60)

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")

    # -- operator and jobs -----------------------------------------------------------------------

    def install_crd(self) -> None:
        """The generated CRD straight from crds/ (what the chart also installs)."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        self.kubectl("wait", "--for=condition=Established", "crd/distributedinferences.kubeinfer.io", "--timeout=60s")

    def install_operator(self, *extra: str, upgrade: bool = False) -> None:
        """`helm install` (or upgrade) of charts/kubeinfer, then wait for the operator pod to run."""
        sets = [arg for pair in [*self.backend.chart_values(), *extra] for arg in ("--set", pair)]
        verb = ["upgrade", "--install"] if upgrade else ["install"]
        self.helm(*verb, RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE, "--create-namespace", *sets)
        self.wait_operator_running()

    def operator_pod(self) -> Manifest | None:
        """The newest operator pod that is neither deleted nor finished (after `make dev-cluster-down` and
        up, the pods of the earlier run are still listed, Failed)."""
        pods = self.items("pods", OPERATOR_NAMESPACE, "app.kubernetes.io/name=kubeinfer")
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        return max(live, key=lambda p: p["metadata"]["creationTimestamp"]) if live else None

    def wait_operator_running(self, timeout: float = 120) -> Manifest:
        def running() -> Manifest | None:
            pod = self.operator_pod()
            statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
            return pod if statuses and all("running" in s.get("state", {}) for s in statuses) else None

        pod: Manifest = wait_for(running, "the operator pod Running", timeout, interval=1)
        return pod

    def operator_installed(self) -> bool:
        return self.helm("status", RELEASE, "-n", OPERATOR_NAMESPACE, check=False).returncode == 0

    def operator_log(self) -> str:
        pod = self.operator_pod()
        if pod is None:
            return "(no operator pod)"
        return self.backend.container_log(OPERATOR_NAMESPACE, pod["metadata"]["name"], "operator")

    def job(self, name: str, namespace: str) -> Manifest:
        obj = self.get("distributedinference", name, namespace)
        assert obj is not None, f"DistributedInference {namespace}/{name} does not exist"
        return obj

    def wait_job(self, name: str, namespace: str, check: Callable[[Manifest], Any], what: str,
                 timeout: float) -> Manifest:
        """Poll the job until `check(job)` is truthy; the failure names the job's last status."""

        def poll() -> Manifest | None:
            job = self.get("distributedinference", name, namespace)
            return job if job is not None and check(job) else None

        try:
            found: Manifest = wait_for(poll, f"{namespace}/{name}: {what}", timeout, interval=1)
        except AssertionError as error:
            last = (self.get("distributedinference", name, namespace) or {}).get("status")
            raise AssertionError(f"{error}\nlast status: {json.dumps(last, indent=1)}") from None
        return found

    def wait_condition(self, name: str, namespace: str, condition: str, timeout: float,
                       each_poll: Callable[[], Any] | None = None) -> Manifest:
        """Wait until the job has `condition` True; fail at once if it ends the other way. `each_poll` runs
        before every look at the job (to watch something else while the job runs)."""
        end = {"Complete", "Failed"} - {condition}

        def check(job: Manifest) -> bool:
            if each_poll is not None:
                each_poll()
            current = conditions(job)
            for other in end:
                if current.get(other, {}).get("status") == "True":
                    raise AssertionError(f"{namespace}/{name} is {other}, expected {condition}: "
                                         f"{json.dumps(job.get('status'), indent=1)}")
            return current.get(condition, {}).get("status") == "True"

        return self.wait_job(name, namespace, check, f"condition {condition}", timeout)

    def create_s3_secret(self, namespace: str) -> None:
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": S3_SECRET},
                  "stringData": self.backend.s3_pod_env()}
        self.apply(secret, namespace)

    # -- S3 ---------------------------------------------------------------------------------------

    def s3_objects(self, bucket: str, prefix: str) -> dict[str, bytes]:
        """Every object under `prefix`, key relative to it -> content."""
        s3 = self.backend.s3_client()
        out: dict[str, bytes] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                key = entry["Key"]
                out[key[len(prefix):]] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return out

    # -- failure dumps ---------------------------------------------------------------------------

    def dump(self, namespace: str | None) -> list[tuple[str, str]]:
        """Report sections: the namespace's objects and events, pod logs, the operator log."""
        sections: list[tuple[str, str]] = []
        if namespace:
            sections.append((f"objects in {namespace}", self._dump_objects(namespace)))
            for pod in self._safe(lambda: self.items("pods", namespace), []):
                for container in pod["spec"].get("containers", []):
                    name = pod["metadata"]["name"]
                    log = self.backend.container_log(namespace, name, container["name"])
                    sections.append((f"log {name}/{container['name']}", _tail(log, 80)))
        sections.append(("operator log", _tail(self._safe(self.operator_log, "(unavailable)"), 120)))
        for path in self.backend.log_files():
            text = path.read_text(errors="replace") if path.exists() else "(missing)"
            sections.append((f"log tail {path.name}", _tail(text, 40)))
        return sections

    def _dump_objects(self, namespace: str) -> str:
        kinds = "distributedinferences,statefulsets,pods,services,configmaps,serviceaccounts,roles,rolebindings"
        parts = [
            self.kubectl("get", kinds, "-n", namespace, "-o", "wide", check=False).stdout,
            self.kubectl("get", "distributedinferences,pods", "-n", namespace, "-o", "yaml", check=False).stdout,
            self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout,
            self.kubectl("get", "nodes", "-o", "wide", check=False).stdout,
        ]
        return "\n".join(parts)

    @staticmethod
    def _safe(call: Callable[[], Any], default: Any) -> Any:
        try:
            return call()
        except Exception as error:  # a dump must never hide the test's own failure
            return default if not isinstance(default, str) else f"{default}: {error}"


def conditions(job: Manifest) -> dict[str, Manifest]:
    return {c["type"]: c for c in (job.get("status") or {}).get("conditions") or []}


def is_true(job: Manifest, condition: str) -> bool:
    return conditions(job).get(condition, {}).get("status") == "True"


def progress(job: Manifest) -> Manifest:
    return dict((job.get("status") or {}).get("progress") or {})


def job_manifest(name: str, spec: Manifest) -> Manifest:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def wait_for(check: Callable[[], Any], what: str, timeout: float, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy and return it; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])
