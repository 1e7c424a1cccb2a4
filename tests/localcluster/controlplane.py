"""A real Kubernetes control plane as local processes: etcd, kube-apiserver, controller-manager, scheduler.

Authorization is Node,RBAC and every controller uses its own service account, so RBAC mistakes in
the chart fail here as they would in a real cluster. The apiserver listens on all interfaces and its
serving cert covers 10.244.0.1, the host side of the node agent's pod bridge, so pods reach it there.
"""

from __future__ import annotations

import base64
import functools
import json
import ssl
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from kubernetes import client, config

from localcluster.binaries import binary, binary_path, free_port, log_tail, spawn, stop_pidfile, wait_until
from localcluster.certs import CertificateAuthority, KeyPair, write_service_account_keys

POD_API_HOST = "10.244.0.1"
"""Host address of the pod bridge: the node agent injects it as KUBERNETES_SERVICE_HOST."""
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
NODE_MONITOR_GRACE_PERIOD = "10s"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
#: Gang scheduling (scheduling.k8s.io/v1beta1 Workload and PodGroup, beta in 1.37, off by default) and
#: the PodGroup's topology constraint (alpha): on in apiserver, controller-manager and scheduler, so one
#: control plane serves every e2e test; jobs that must not gang-schedule say so in their spec.
FEATURE_GATES = {"GenericWorkload": True, "TopologyAwareWorkloadScheduling": True}
RUNTIME_CONFIG = "scheduling.k8s.io/v1beta1=true"
_STATE = "state.json"


@dataclass
class Ports:
    """The TCP ports one control plane instance uses (saved so another process can attach)."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def allocate(cls) -> Ports:
        return cls(*(free_port() for _ in range(5)))


def write_kubeconfig(path: Path, server: str, ca: Path, *, cert: KeyPair | None = None, token: str = "") -> Path:
    """A self-contained kubeconfig (data embedded) for a client cert or a bearer token."""

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    user: dict[str, str] = {"token": token}
    if cert is not None:
        user = {"client-certificate-data": b64(cert.cert), "client-key-data": b64(cert.key)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "user"}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class ControlPlane:
    """Start/stop the control plane in ``workdir``; ``attach`` re-opens one started by another process."""

    def __init__(self, workdir: Path, *, detach: bool = False,
                 feature_gates: dict[str, bool] | None = None) -> None:
        self.workdir = workdir.resolve()
        self.detach = detach
        self.feature_gates = dict(FEATURE_GATES if feature_gates is None else feature_gates)
        self.pki = self.workdir / "pki"
        self.logs = self.workdir / "logs"
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self.pod_api_host = POD_API_HOST
        self.ports: Ports | None = None

    @classmethod
    def attach(cls, workdir: Path) -> ControlPlane:
        """The control plane recorded in ``workdir`` (for ``down`` or tests reusing a dev cluster)."""
        plane = cls(workdir, detach=True)
        plane.ports = Ports(**json.loads((plane.workdir / _STATE).read_text()))
        return plane

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def api_port(self) -> int:
        if self.ports is None:
            raise RuntimeError("control plane not started")
        return self.ports.apiserver

    @property
    def pod_api_port(self) -> int:
        """The port pods use with ``pod_api_host`` (KUBERNETES_SERVICE_PORT)."""
        return self.api_port

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def start(self) -> ControlPlane:
        """Start every component and wait until each is healthy; stop all on any failure."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = Ports.allocate()
        (self.workdir / _STATE).write_text(json.dumps(asdict(self.ports)))
        try:
            self._write_pki()
            self._start_etcd()
            self._start_apiserver()
            self._start_controllers()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the components in reverse order (idempotent)."""
        for name in reversed(COMPONENTS):
            stop_pidfile(self.logs / f"{name}.pid", binary_path(name))

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Environment for clients on this host."""
        return {"KUBECONFIG": str(self.admin_kubeconfig)}

    def log_files(self) -> list[Path]:
        return [self.logs / f"{name}.log" for name in COMPONENTS]

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` (admin unless another kubeconfig is given)."""
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig or self.admin_kubeconfig)
        )

    def kubeconfig_for_serviceaccount(self, namespace: str, name: str, expiration_seconds: int = 86400) -> Path:
        """A token kubeconfig with exactly the RBAC of ``namespace/name`` (TokenRequest API)."""
        with self.api_client() as api_client:
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
            )
            response = client.CoreV1Api(api_client).create_namespaced_service_account_token(name, namespace, request)
        token = str(response.status.token)  # type: ignore[union-attr]
        path = self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        return write_kubeconfig(path, self.server_url, self.ca_file, token=token)

    def kubeconfig_for_node(self, node_name: str) -> Path:
        """A kubelet-style identity (system:node:<name>) so the Node authorizer applies to it."""
        pair = self._ca().issue(f"node-{node_name}", f"system:node:{node_name}", organizations=("system:nodes",))
        return write_kubeconfig(self.workdir / f"node-{node_name}.kubeconfig", self.server_url, self.ca_file, cert=pair)

    # -- internals -------------------------------------------------------------------------------

    def _ca(self) -> CertificateAuthority:
        return CertificateAuthority(self.pki)

    def _write_pki(self) -> None:
        ca = self._ca()
        ca.issue(
            "apiserver",
            "kube-apiserver",
            dns_names=(
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
            ),
            ip_addresses=("127.0.0.1", POD_API_HOST, KUBERNETES_SERVICE_IP),
            server=True,
        )
        write_service_account_keys(self.pki)
        # The front-proxy CA (as kubeadm sets up) lets the apiserver's request-header authn start clean.
        CertificateAuthority(self.pki / "front-proxy").issue("client", "front-proxy-client")
        identities = {
            "admin": ("kubeinfer-admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
        }
        for stem, (common_name, orgs) in identities.items():
            pair = ca.issue(stem, common_name, organizations=orgs)
            target = self.admin_kubeconfig if stem == "admin" else self.pki / f"{stem}.kubeconfig"
            write_kubeconfig(target, self.server_url, self.ca_file, cert=pair)

    def _gates(self) -> list[str]:
        """`--feature-gates` for every component (none when no gate is set)."""
        gates = ",".join(f"{k}={str(v).lower()}" for k, v in sorted(self.feature_gates.items()))
        return [f"--feature-gates={gates}"] if gates else []

    def _spawn(self, name: str, args: list[str]) -> None:
        spawn(name, [binary(name), *args], self.logs, detach=self.detach)

    def _start_etcd(self) -> None:
        assert self.ports is not None
        client_url = f"http://127.0.0.1:{self.ports.etcd_client}"
        peer_url = f"http://127.0.0.1:{self.ports.etcd_peer}"
        self._spawn(
            "etcd",
            [
                "--name=local",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=local={peer_url}",
                "--log-level=warn",
                # Test data is disposable: skipping fsync makes etcd fast on shared, slow disks.
                "--unsafe-no-fsync",
            ],
        )
        wait_until(lambda: _http_ok(f"{client_url}/health"), "etcd", 60, self.logs / "etcd.log")

    def _start_apiserver(self) -> None:
        assert self.ports is not None
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
                "--bind-address=0.0.0.0",
                f"--secure-port={self.ports.apiserver}",
                # The endpoints of service/kubernetes: where pods reach the apiserver.
                f"--advertise-address={POD_API_HOST}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={pki / 'apiserver-generated'}",
                f"--requestheader-client-ca-file={pki / 'front-proxy' / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy' / 'client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy' / 'client.key'}",
                *self._gates(),
                *([f"--runtime-config={RUNTIME_CONFIG}"] if self.feature_gates.get("GenericWorkload") else []),
            ],
        )
        wait_until(self._apiserver_ready, "kube-apiserver /readyz", 120, self.logs / "kube-apiserver.log")

    def _start_controllers(self) -> None:
        assert self.ports is not None
        pki = self.pki
        common = ["--bind-address=127.0.0.1", "--leader-elect=false", *self._gates()]
        kcm_kubeconfig = pki / "controller-manager.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            [
                *common,
                f"--secure-port={self.ports.controller_manager}",
                f"--cert-dir={pki / 'kcm-generated'}",
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                # All default controllers (statefulset, garbage-collector, node-lifecycle, serviceaccount,
                # serviceaccount-token, namespace, endpointslice, ...), each with its own identity.
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # A lost node is noticed in seconds, so NotReady-node tests stay short.
                f"--node-monitor-grace-period={NODE_MONITOR_GRACE_PERIOD}",
                "--node-monitor-period=2s",
            ],
        )
        sched_kubeconfig = pki / "scheduler.kubeconfig"
        self._spawn(
            "kube-scheduler",
            [
                *common,
                f"--secure-port={self.ports.scheduler}",
                f"--kubeconfig={sched_kubeconfig}",
                f"--authentication-kubeconfig={sched_kubeconfig}",
                f"--authorization-kubeconfig={sched_kubeconfig}",
            ],
        )
        for name, port in (
            ("kube-controller-manager", self.ports.controller_manager),
            ("kube-scheduler", self.ports.scheduler),
        ):
            check = functools.partial(_http_ok, f"https://127.0.0.1:{port}/healthz", _insecure_context())
            wait_until(check, name, 90, self.logs / f"{name}.log")

    def running(self) -> bool:
        """True if this control plane's apiserver answers /readyz."""
        try:
            return self.ports is not None and self._apiserver_ready()
        except OSError:
            return False

    def _apiserver_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return _http_ok(f"{self.server_url}/readyz", context)

    def describe(self) -> str:
        """Human summary with each component's last log lines (for failure reports)."""
        parts = [f"control plane in {self.workdir}, apiserver {self.server_url}"]
        for log in self.log_files():
            parts.append(f"--- {log.name} (tail) ---\n{log_tail(log, 30)}")
        return "\n".join(parts)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return bool(response.status == 200)


def _insecure_context() -> ssl.SSLContext:
    """kcm/scheduler serve health on self-signed certs; only liveness is checked through it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
