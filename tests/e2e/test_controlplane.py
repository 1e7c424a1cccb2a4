"""The local control plane runs the real controllers and enforces RBAC, as the operator tests assume."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

import localcluster.s3 as s3_module
from e2e.conftest import Kubectl, wait_for
from localcluster.binaries import ProcessExitedError, binary, free_port, read_versions
from localcluster.controlplane import POD_API_HOST, ControlPlane
from localcluster.s3 import S3Server

pytestmark = pytest.mark.e2e


def _statefulset(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            # Parallel: with no node to run pod-0, OrderedReady would never create pod-1.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # No node has this label (node agents of other tests may be up): never scheduled.
                "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
                         "nodeSelector": {"kubeinfer-e2e/no-such-node": "true"}},
            },
        },
    }


def _pods(core: client.CoreV1Api, namespace: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector="app=web").items)


def test_statefulset_controller_creates_indexed_pods(api_client: Any, namespace: str) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    body: Any = _statefulset("web", 2)
    sts: Any = apps.create_namespaced_stateful_set(namespace, body)

    pods = wait_for(lambda: len(_pods(core, namespace)) == 2 and _pods(core, namespace), "2 pods of web", 60)
    assert sorted(p.metadata.name for p in pods) == ["web-0", "web-1"]
    for pod in pods:
        index = pod.metadata.name.rsplit("-", 1)[1]
        assert pod.metadata.labels["apps.kubernetes.io/pod-index"] == index
        assert pod.metadata.labels["statefulset.kubernetes.io/pod-name"] == pod.metadata.name
        [owner] = pod.metadata.owner_references
        assert (owner.kind, owner.uid, owner.controller) == ("StatefulSet", sts.metadata.uid, True)
        # The ServiceAccount admission plugin ran: the pod gets a projected API token volume.
        assert any(v.projected for v in pod.spec.volumes)

    # The scheduler is alive: with no matching node it reports the pods unschedulable.
    def unschedulable() -> bool:
        conditions = [c for p in _pods(core, namespace) for c in (p.status.conditions or [])]
        scheduled = [c for c in conditions if c.type == "PodScheduled"]
        return len(scheduled) == 2 and all(c.reason == "Unschedulable" for c in scheduled)

    wait_for(unschedulable, "PodScheduled=False/Unschedulable on both pods", 60)

    # The garbage collector deletes the pods the StatefulSet owned.
    apps.delete_namespaced_stateful_set("web", namespace, propagation_policy="Background")
    wait_for(lambda: not _pods(core, namespace), "garbage collection of web's pods", 60)


def test_namespace_gets_root_ca_and_default_serviceaccount(
    control_plane: ControlPlane, api_client: Any, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    account: Any = core.read_namespaced_service_account("default", namespace)
    assert account.metadata.name == "default"
    config_map = wait_for(lambda: _read_config_map(core, namespace, "kube-root-ca.crt"), "kube-root-ca.crt", 30)
    assert config_map.data["ca.crt"] == control_plane.ca_file.read_text()


def _read_config_map(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    try:
        return core.read_namespaced_config_map(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _status_of(call: Any) -> int:
    try:
        call()
    except ApiException as error:
        return int(error.status)
    return 200


def test_serviceaccount_kubeconfig_has_exactly_its_rbac(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kubectl("create", "role", "read-configmaps", "--verb=get,list", "--resource=configmaps", "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=read-configmaps",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )

    kubeconfig = control_plane.kubeconfig_for_serviceaccount(namespace, "reader")
    with control_plane.api_client(kubeconfig) as limited:
        core = client.CoreV1Api(limited)
        allowed = _status_of(lambda: core.list_namespaced_config_map(namespace))
        denied = {
            "create configmap": _status_of(
                lambda: core.create_namespaced_config_map(
                    namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))
                )
            ),
            "list pods": _status_of(lambda: core.list_namespaced_pod(namespace)),
            "list configmaps in kube-system": _status_of(lambda: core.list_namespaced_config_map("kube-system")),
            "list namespaces": _status_of(core.list_namespace),
        }
    assert allowed == 200
    assert denied == dict.fromkeys(denied, 403)

    # kubectl agrees when impersonating the service account.
    result = kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, f"--as=system:serviceaccount:{namespace}:reader", check=False
    )
    assert result.stdout.strip() == "no"


def test_serving_cert_is_valid_for_the_pod_bridge_address(control_plane: ControlPlane) -> None:
    # Pods reach the apiserver at 10.244.0.1; the TLS name check must pass for that address.
    context = ssl.create_default_context(cafile=str(control_plane.ca_file))
    with (
        socket.create_connection(("127.0.0.1", control_plane.pod_api_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=control_plane.pod_api_host) as tls,
    ):
        assert tls.version() is not None


def test_node_lifecycle_marks_a_silent_node_unreachable(control_plane: ControlPlane, api_client: Any) -> None:
    name = f"silent-{uuid.uuid4().hex[:6]}"
    heartbeat = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "test",
        "lastHeartbeatTime": heartbeat,
        "lastTransitionTime": heartbeat,
    }
    admin = client.CoreV1Api(api_client)
    other = f"other-{name}"
    admin.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=other)))
    try:
        with control_plane.api_client(control_plane.kubeconfig_for_node(name)) as node_api:
            core = client.CoreV1Api(node_api)
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
            core.patch_node_status(name, {"status": {"conditions": [ready]}})
            # The Node authorizer and NodeRestriction: a node may not touch another node.
            assert _status_of(lambda: core.patch_node(other, {"metadata": {"labels": {"a": "b"}}})) == 403

        def unreachable() -> bool:
            node: Any = admin.read_node(name)
            status = {c.type: c.status for c in node.status.conditions or []}
            taints = {t.key for t in node.spec.taints or []}
            return status.get("Ready") == "Unknown" and "node.kubernetes.io/unreachable" in taints

        # No heartbeat after node-monitor-grace-period: Ready=Unknown and the unreachable taint.
        wait_for(unreachable, f"node {name} marked unreachable", 90)
    finally:
        for node_name in (name, other):
            with contextlib.suppress(ApiException):
                admin.delete_node(node_name)


def test_s3_server_stores_objects(s3_server: S3Server) -> None:
    s3_server.create_bucket("roundtrip")
    s3_server.create_bucket("roundtrip")  # idempotent: already ours is fine
    s3 = s3_server.client()
    s3.put_object(Bucket="roundtrip", Key="a/b.txt", Body=b"hello")
    assert s3.get_object(Bucket="roundtrip", Key="a/b.txt")["Body"].read() == b"hello"
    assert s3_server.pod_endpoint_url == f"http://{POD_API_HOST}:{s3_server.port}"


def test_s3_server_chooses_again_when_its_port_is_taken_before_it_binds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers starting at once can pick the same free port; the one that cannot bind must not take the
    other's answers for its own (the health probe is anonymous) but move to another port."""
    with socket.socket() as taker:
        taker.bind(("0.0.0.0", 0))
        taker.listen()
        picks: list[int | None] = []

        def first_pick_taken(preferred: int | None = None) -> int:
            picks.append(preferred)
            return int(taker.getsockname()[1]) if len(picks) == 1 else free_port()

        monkeypatch.setattr(s3_module, "free_port", first_pick_taken)
        with S3Server(tmp_path / "s3") as server:
            assert len(picks) == 2 and server.port != taker.getsockname()[1]
            server.create_bucket("moved")
            assert [b["Name"] for b in server.client().list_buckets()["Buckets"]] == ["moved"]


def test_s3_server_restarted_onto_a_taken_port_fails_at_once_naming_it(tmp_path: Path) -> None:
    """An outage test restarts MinIO on its port; if another server took it meanwhile, say so now (not after a
    minute of probing), and never take that server's answers for ours."""
    with S3Server(tmp_path / "holder") as holder:
        stopped = S3Server(tmp_path / "stopped")
        stopped.port, stopped.access_key, stopped.secret_key = holder.port, holder.access_key, "not-the-holders"
        with pytest.raises(ProcessExitedError, match="already in use"):
            stopped.restart()
        with pytest.raises(RuntimeError, match="does not answer"):
            stopped.check_running(timeout=3)  # the holder answers on that port, but not to these credentials
        holder.check_running()


def test_daemon_ports_lie_below_the_kernels_ephemeral_range() -> None:
    """A port the kernel hands out (bind to 0, a client's local port) can be taken while its daemon restarts."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(free_port() < low for _ in range(20))


def test_helm_installs_a_chart(control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.37.0-0'\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata: {kube: '{{ .Capabilities.KubeVersion }}'}\n"
    )
    helm = [str(binary("helm")), f"--kubeconfig={control_plane.admin_kubeconfig}", "-n", namespace]
    result = subprocess.run([*helm, "install", "probe", str(chart), "--wait"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # The apiserver reports the pinned version (not v0.0.0-master), so kubeVersion constraints work.
    version = kubectl("get", "configmap", "probe", "-n", namespace, "-o", "jsonpath={.data.kube}").stdout
    assert version == read_versions()["KUBERNETES_VERSION"]
