"""The real Kueue manager (built from the Go module proxy) against a local control plane, webhooks included.

Kueue's CRDs come from the module it was built from. Its webhook server runs on loopback with a
certificate from our own CA, and the apiserver (also on this host) calls it through `url:` client
configs: the conversion webhook of the multi-version CRDs, and the mutating and validating webhooks of
Kueue's own kinds (Workload, ClusterQueue, LocalQueue, ResourceFlavor, Cohort, ...). Not registered:
the webhooks of the built-in job integrations (pods, batch Jobs, JobSets, ...), which would put every
pod of the cluster behind this one process; kubeinfer manages its Workloads itself and needs none of
them, and the benchmarks create their JobSets suspended (what JobSet's webhook would do). Off: the
visibility API server (an aggregated API needs a Service, not a URL); queue positions are not served.
Kueue v0.19, when it does not manage its certificates itself, loads a metrics certificate from the
fixed path /etc/kueue/metrics/certs at start (even with metrics off): the harness puts one there.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from localcluster.binaries import binary, cache_dir, free_port, read_versions, spawn, stop_pidfile, wait_until
from localcluster.certs import CertificateAuthority
from localcluster.controlplane import ControlPlane

NAMESPACE = "kueue-system"
GROUP = "kueue.x-k8s.io"
#: The CRDs Kueue's kustomization gives a conversion webhook (v1beta1 <-> v1beta2).
CONVERTED = ("clusterqueues", "localqueues", "cohorts", "workloads", "multikueueclusters")
EXTERNAL_FRAMEWORK = "DistributedInference.v1alpha1.kubeinfer.io"
METRICS_CERTS = Path("/etc/kueue/metrics/certs")


def module_dir() -> Path:
    """Kueue's source as the build fetched it (Go module cache): CRDs and webhook manifests."""
    version = read_versions()["KUEUE_VERSION"]
    path = cache_dir() / "go" / "mod" / f"sigs.k8s.io/kueue@{version}" / "config" / "components"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `bash hack/build-tools.sh kueue`")
    return path


class KueueManager:
    """Start/stop Kueue on `plane`; `frameworks` are Kueue's built-in integrations to enable."""

    def __init__(self, plane: ControlPlane, workdir: Path, frameworks: tuple[str, ...] = ("batch/job",)) -> None:
        self.plane, self.workdir, self.frameworks = plane, workdir.resolve(), frameworks
        self.logs = plane.logs
        self.port = 0
        self.health = 0

    @property
    def log_file(self) -> Path:
        return self.logs / "kueue.log"

    def kubectl(self, *args: str, input: str | None = None) -> str:
        argv = [str(binary("kubectl")), f"--kubeconfig={self.plane.admin_kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {result.stderr[-2000:]}")
        return result.stdout

    def start(self) -> KueueManager:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.health = free_port()
        while self.health == self.port:  # a port just released may be handed out again
            self.health = free_port()
        certs = self.workdir / "certs"
        CertificateAuthority(certs).issue("tls", "kueue-webhook", dns_names=("localhost",),
                                          ip_addresses=("127.0.0.1",), server=True)
        if not (METRICS_CERTS / "tls.crt").exists():
            CertificateAuthority(self.workdir / "metrics-ca").issue("tls", "kueue-metrics", server=True)
            METRICS_CERTS.mkdir(parents=True, exist_ok=True)
            for name in ("tls.crt", "tls.key"):
                shutil.copyfile(self.workdir / "metrics-ca" / name, METRICS_CERTS / name)
        ca_bundle = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
        self._install_crds(ca_bundle)
        self.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        config = self.workdir / "kueue-config.yaml"
        config.write_text(yaml.safe_dump(self._config(certs)))
        spawn("kueue", [binary("kueue"), f"--config={config}", "--feature-gates=VisibilityOnDemand=false",
                        "--zap-log-level=info"], self.logs, env=self.plane.env())
        wait_until(self._ready, "kueue /readyz", 120, self.log_file)
        self._register_webhooks(ca_bundle)
        self._announce_crds()
        return self

    def stop(self) -> None:
        """Unregister the webhooks first (nothing may call a stopped server), then stop the manager."""
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            subprocess.run([str(binary("kubectl")), f"--kubeconfig={self.plane.admin_kubeconfig}", "delete", kind,
                            f"kueue-{kind.split('webhook')[0]}", "--ignore-not-found"], capture_output=True, timeout=60)
        stop_pidfile(self.logs / "kueue.pid", binary("kueue"))

    def __enter__(self) -> KueueManager:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def _url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def _install_crds(self, ca_bundle: str) -> None:
        docs = []
        for path in sorted((module_dir() / "crd" / "bases").glob("*.yaml")):
            crd: dict[str, Any] = yaml.safe_load(path.read_text())
            if crd["spec"]["names"]["plural"] in CONVERTED:
                crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                    "clientConfig": {"url": self._url("/convert"), "caBundle": ca_bundle},
                    "conversionReviewVersions": ["v1"]}}
            docs.append(crd)
        # Server-side: the CRDs are too large for the last-applied annotation of a client-side apply.
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                     input="\n---\n".join(yaml.safe_dump(d) for d in docs))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     *[f"crd/{d['metadata']['name']}" for d in docs])

    def _config(self, certs: Path) -> dict[str, Any]:
        return {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"host": "127.0.0.1", "port": self.port, "certDir": str(certs)},
            "leaderElection": {"leaderElect": False},
            # Cert rotation manages a Secret and webhook configurations of an in-cluster install.
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": list(self.frameworks), "externalFrameworks": [EXTERNAL_FRAMEWORK]},
        }

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/readyz", timeout=5) as response:
            return bool(response.status == 200)

    def _announce_crds(self) -> None:
        """A running operator (kopf) re-reads API discovery on each CRD event, and discovery lags the
        CRDs' creation: the last event may come before `workloads` is served, leaving the operator blind
        to Workloads. Once discovery serves them, one more CRD event (an annotation) makes it look again."""
        wait_until(lambda: "workloads" in self.kubectl("api-resources", f"--api-group={GROUP}", "-o", "name"),
                   "discovery serving kueue.x-k8s.io workloads", 60, self.log_file)
        self.kubectl("annotate", "--overwrite", f"crd/workloads.{GROUP}", f"kubeinfer.io/announced={time.time_ns()}")

    def _register_webhooks(self, ca_bundle: str) -> None:
        """Kueue's webhooks for its own kinds, with `url:` client configs on loopback."""
        out = []
        for doc in yaml.safe_load_all((module_dir() / "webhook" / "manifests.yaml").read_text()):
            if not doc:
                continue
            hooks = [h for h in doc["webhooks"] if any(GROUP in r.get("apiGroups", []) for r in h["rules"])]
            for hook in hooks:
                hook["clientConfig"] = {"url": self._url(hook["clientConfig"]["service"]["path"]),
                                        "caBundle": ca_bundle}
            kind = doc["kind"].lower()
            doc["metadata"] = {"name": f"kueue-{kind.split('webhook')[0]}"}
            doc["webhooks"] = hooks
            out.append(doc)
        self.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in out))
