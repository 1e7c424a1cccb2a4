"""The test node agent behaves like kubelet against the real control plane.

Two agent processes serve one node each, so StatefulSet pods placed on different nodes must find
each other through the DNS names every agent publishes, exactly as operator-created workers will.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from e2e.conftest import wait_for
from localcluster.controlplane import ControlPlane
from localcluster.node_agent.launcher import NodeAgentProcess, pod_processes
from localcluster.node_agent.testing import (
    field_env,
    headless_service,
    python_pod,
    read_text,
    spread_over_nodes,
    statefulset,
)

# One worker runs the module: its agents serve fixed node names.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("node-agent")]
NODES = ("na-node-1", "na-node-2")
# what the agent runs for image `.../echoer:<tag>` when a container sets no command (an image ENTRYPOINT)
ENTRYPOINT = ["--entrypoint", 'echoer=["python", "-c", "import sys; print(*sys.argv[1:])"]',
              "--image-user", "echoer=1000:1000"]  # and the user it runs as, like the Dockerfile's USER
#: The nodes of this module carry this label and its pods select it: node agents that other test
#: modules of the session keep running (e2e-a, ...) must not get them.
POOL = {"kubeinfer-e2e/pool": "node-agent-tests"}


#: This module's nodes are tainted from their registration on, so the session's jobs never land on them
#: (a job's worker on a node this module then stops would fail the job).
TAINT = [{"key": "kubeinfer-e2e/pool", "operator": "Equal", "value": "node-agent-tests", "effect": "NoSchedule"}]
OWN_NODES = ("--register-with-taints", "kubeinfer-e2e/pool=node-agent-tests:NoSchedule")


def pool_pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """`python_pod` on this module's nodes (unless it names its node), tolerating their taint."""
    return python_pod(name, script, **({} if "nodeName" in spec else {"nodeSelector": POOL}), tolerations=TAINT,
                      **spec)


@pytest.fixture(scope="module")
def agents(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, api_client: Any
) -> Iterator[list[NodeAgentProcess]]:
    """One agent process per node; they share a workdir, so any agent's `container_log` finds any pod's log."""
    workdir = tmp_path_factory.mktemp("node-agent")
    started: list[NodeAgentProcess] = []
    try:
        for node in NODES:
            agent = NodeAgentProcess(
                control_plane.admin_kubeconfig, [node], workdir, api_port=control_plane.api_port,
                extra_args=[*ENTRYPOINT, *OWN_NODES,
                            *(arg for k, v in POOL.items() for arg in ("--label", f"{k}={v}"))],
            )
            started.append(agent.start())
        yield started
    finally:
        for agent in started:
            agent.stop()
        core: Any = client.CoreV1Api(api_client)
        for node in NODES:
            try:
                core.delete_node(node)
            except ApiException as error:
                if error.status != 404:
                    raise


def _read(core: Any, namespace: str, name: str) -> Any:
    return core.read_namespaced_pod(name, namespace)


def _finished(core: Any, namespace: str, name: str) -> Any:
    """The pod once it reached a terminal phase, else None."""
    pod = _read(core, namespace, name)
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


def _log(agent: NodeAgentProcess, namespace: str, pod: str, container: str = "main") -> str:
    return read_text(agent.container_log(namespace, pod, container))


PEER_SCRIPT = """
import os, socket, sys, time
ns, me, index = os.environ["NS"], os.environ["POD_NAME"], int(os.environ["POD_INDEX"])
for _ in range(600):  # its own name in the form torchrun's MASTER_ADDR takes (<pod>.<svc>.<ns>.svc)
    try:
        print("self", socket.gethostbyname(f"{me}.peer.{ns}.svc"), flush=True)
        break
    except OSError:
        time.sleep(0.1)
if index == 0:
    server = socket.create_server(("0.0.0.0", 7000))
    conn, _ = server.accept()
    print("got", conn.recv(100).decode(), flush=True)
    conn.sendall(f"ack from {me}".encode())
    conn.close()
else:
    name = f"peer-0.peer.{ns}.svc.cluster.local"
    for _ in range(600):
        try:
            addr = socket.gethostbyname(name)
            conn = socket.create_connection((addr, 7000), timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"could not reach {name}")
    conn.sendall(f"hello from {me}".encode())
    print("resolved", addr, "reply", conn.recv(100).decode(), flush=True)
print("hosts:", open("/etc/hosts").read().replace(chr(10), " | "), flush=True)
time.sleep(3600)
"""


def _peer_statefulset() -> dict[str, Any]:
    labels = {"app": "peer"}
    index = "metadata.labels['apps.kubernetes.io/pod-index']"
    env = [field_env("NS", "metadata.namespace"), field_env("POD_NAME", "metadata.name"), field_env("POD_INDEX", index)]
    pod = pool_pod("x", PEER_SCRIPT, container={"env": env}, affinity=spread_over_nodes(labels))
    return statefulset("peer", pod["spec"], 2, labels)


def test_statefulset_pods_on_two_nodes_resolve_each_other_and_talk(
    api_client: Any, namespace: str, agents: list[NodeAgentProcess]
) -> None:
    core: Any = client.CoreV1Api(api_client)
    apps: Any = client.AppsV1Api(api_client)
    core.create_namespaced_service(namespace, headless_service("peer", {"app": "peer"}, 7000))
    apps.create_namespaced_stateful_set(namespace, _peer_statefulset())

    agent = agents[0]
    wait_for(lambda: "reply ack from peer-0" in _log(agent, namespace, "peer-1"), "peer-1 to get a reply", 90)
    assert "got hello from peer-1" in _log(agent, namespace, "peer-0")
    pods = {p.metadata.name: p for p in core.list_namespaced_pod(namespace).items}
    assert {pods["peer-0"].spec.node_name, pods["peer-1"].spec.node_name} == set(NODES)
    assert f"resolved {pods['peer-0'].status.pod_ip} reply" in _log(agent, namespace, "peer-1")
    for name, pod in pods.items():
        assert f"self {pod.status.pod_ip}\n" in _log(agent, namespace, name), "a pod resolves its own DNS name"
    for name, pod in pods.items():
        assert pod.status.phase == "Running"
        assert pod.status.pod_ip.startswith("10.244.")
        [cs] = pod.status.container_statuses
        assert cs.ready and cs.state.running is not None and cs.image == "kubeinfer/test:dev"
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready["Ready"] == ready["ContainersReady"] == ready["Initialized"] == "True", name
    # every form of the name the cluster DNS would answer, plus the pod's own entry
    hosts = _log(agent, namespace, "peer-1")
    ip0 = pods["peer-0"].status.pod_ip
    fqdn = f"peer-0.peer.{namespace}.svc.cluster.local"
    assert f"{ip0}\t{fqdn} peer-0.peer.{namespace}.svc peer-0.peer.{namespace} peer-0.peer" in hosts
    assert f"{pods['peer-1'].status.pod_ip}\tpeer-1.peer.{namespace}.svc.cluster.local peer-1" in hosts


ENV_SCRIPT = """
import json, os, socket
from kubernetes import client, config
config.load_incluster_config()
body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
review = client.AuthenticationV1Api().create_self_subject_review(body)
out = {k: v for k, v in os.environ.items() if k.startswith(("E_", "CM_"))}
out["user"] = review.status.user_info.username
out["hostname"] = socket.gethostname()
out["cwd"] = os.getcwd()
paths = ["/etc/demo/config/app.conf", "/etc/demo/secret/token", "/etc/demo/info/labels"]
out["files"] = {p: open(p).read() for p in paths}
out["shm_is_tmpfs"] = any(l.split()[1] == "/dev/shm" and l.split()[2] == "tmpfs" for l in open("/proc/mounts"))
shm = os.statvfs("/dev/shm")
out["shm_bytes"] = shm.f_blocks * shm.f_frsize
print(json.dumps(out), flush=True)
"""


def _envy_pod() -> dict[str, Any]:
    """A pod using every env source, the volume types the operator uses, a hostname and a workingDir."""
    env = [
        {"name": "E_LITERAL", "value": "plain"},
        {"name": "E_EXPANDED", "value": "$(E_LITERAL)-x-$(UNDEFINED)-$$(E_LITERAL)"},
        field_env("E_NAME", "metadata.name"),
        field_env("E_NS", "metadata.namespace"),
        field_env("E_TIER", "metadata.labels['tier']"),
        field_env("E_NOTE", "metadata.annotations['note']"),
        field_env("E_IP", "status.podIP"),
        field_env("E_NODE", "spec.nodeName"),
        {"name": "E_GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
        {"name": "E_SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
    ]
    mounts = [
        {"name": "config", "mountPath": "/etc/demo/config", "readOnly": True},
        {"name": "secret", "mountPath": "/etc/demo/secret"},
        {"name": "info", "mountPath": "/etc/demo/info"},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    volumes = [
        {"name": "config", "configMap": {"name": "cfg"}},
        {"name": "secret", "secret": {"secretName": "sec"}},
        {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},  # a quantity, as kubelet takes it
    ]
    container = {
        "env": env,
        "envFrom": [{"prefix": "CM_", "configMapRef": {"name": "cfg"}}],
        "volumeMounts": mounts,
        "workingDir": "/etc/demo/config",
    }
    meta = {"labels": {"tier": "backend"}, "annotations": {"note": "n1"}}
    return pool_pod("envy", ENV_SCRIPT, container=container, volumes=volumes, metadata=meta, hostname="envy-host")


def test_env_downward_api_volumes_and_in_cluster_api(
    api_client: Any, namespace: str, agents: list[NodeAgentProcess]
) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg"}, "data": {"greeting": "hello", "app.conf": "x=1\n"}}
    )
    core.create_namespaced_secret(namespace, {"metadata": {"name": "sec"}, "stringData": {"token": "s3cr3t"}})
    core.create_namespaced_pod(namespace, _envy_pod())

    pod = wait_for(lambda: _finished(core, namespace, "envy"), "pod envy to finish", 60)
    log = _log(agents[0], namespace, "envy")
    assert pod.status.phase == "Succeeded", log
    seen = json.loads(log.strip().splitlines()[-1])
    assert seen["E_LITERAL"] == "plain"
    assert seen["E_EXPANDED"] == "plain-x-$(UNDEFINED)-$(E_LITERAL)"
    assert (seen["E_NAME"], seen["E_NS"], seen["E_TIER"], seen["E_NOTE"]) == ("envy", namespace, "backend", "n1")
    assert seen["E_IP"] == pod.status.pod_ip and seen["E_NODE"] == pod.spec.node_name
    assert (seen["E_GREETING"], seen["E_SECRET"]) == ("hello", "s3cr3t")
    assert (seen["CM_greeting"], seen["CM_app.conf"]) == ("hello", "x=1\n")
    assert seen["user"] == f"system:serviceaccount:{namespace}:default"
    assert (seen["hostname"], seen["cwd"]) == ("envy-host", "/etc/demo/config")
    assert seen["files"] == {
        "/etc/demo/config/app.conf": "x=1\n",
        "/etc/demo/secret/token": "s3cr3t",
        "/etc/demo/info/labels": 'tier="backend"',
    }
    assert seen["shm_is_tmpfs"] is True and seen["shm_bytes"] == 64 * 2**20
    # the mounts were private to the pod
    assert not Path("/etc/demo/config/app.conf").exists()


def test_exit_codes_and_termination_messages(api_client: Any, namespace: str, agents: list[NodeAgentProcess]) -> None:
    core: Any = client.CoreV1Api(api_client)
    pod = pool_pod("fails", "open('/dev/termination-log', 'w').write('custom reason'); raise SystemExit(3)")
    pod["spec"]["containers"].append(
        {
            "name": "logs",
            "image": "kubeinfer/test:dev",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "command": ["python", "-c", "print('line one'); print('boom: the last words', flush=True); exit(5)"],
        }
    )
    pod["spec"]["containers"].append({"name": "ok", "image": "kubeinfer/test:dev", "command": ["true"]})
    pod["spec"]["containers"].append({"name": "missing", "image": "kubeinfer/test:dev", "command": ["no-such-cmd"]})
    core.create_namespaced_pod(namespace, pod)

    done = wait_for(lambda: _finished(core, namespace, "fails"), "pod fails to finish", 60)
    assert done.status.phase == "Failed"
    states = {cs.name: cs.state.terminated for cs in done.status.container_statuses}
    assert (states["main"].exit_code, states["main"].reason, states["main"].message) == (3, "Error", "custom reason")
    assert (states["logs"].exit_code, states["logs"].reason) == (5, "Error")
    assert states["logs"].message.endswith("line one\nboom: the last words")
    assert (states["ok"].exit_code, states["ok"].reason, states["ok"].message) == (0, "Completed", None)
    assert (states["missing"].exit_code, states["missing"].reason) == (128, "StartError")
    assert "no-such-cmd" in states["missing"].message


def test_restart_policy_always_restarts_and_counts(
    api_client: Any, namespace: str, agents: list[NodeAgentProcess]
) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        namespace, pool_pod("crashy", "print('run', flush=True); exit(4)", restartPolicy="Always")
    )

    def restarted_twice() -> Any:
        pod = _read(core, namespace, "crashy")
        statuses = pod.status.container_statuses or []
        return statuses and statuses[0].restart_count >= 2 and pod

    pod = wait_for(restarted_twice, "crashy to restart twice", 60)
    [cs] = pod.status.container_statuses
    assert pod.status.phase == "Running"
    assert cs.last_state.terminated.exit_code == 4
    # Two restarts mean a third run has started; its line may not be printed yet. The log is
    # appended across restarts, never truncated: all three lines end up in one file.
    wait_for(lambda: _log(agents[0], namespace, "crashy").count("run\n") >= 3, "three runs in one log", 60)


def test_killed_process_is_reported_and_restarted(
    api_client: Any, namespace: str, agents: list[NodeAgentProcess]
) -> None:
    core: Any = client.CoreV1Api(api_client)
    script = "import time; print('up', flush=True); time.sleep(3600)"
    core.create_namespaced_pod(namespace, pool_pod("sturdy", script, restartPolicy="Always"))
    wait_for(lambda: "up" in _log(agents[0], namespace, "sturdy"), "sturdy to start", 60)
    pod = _read(core, namespace, "sturdy")

    pids = pod_processes(pod.spec.node_name, pod.metadata.uid)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)

    def restarted() -> Any:
        statuses = _read(core, namespace, "sturdy").status.container_statuses
        return statuses[0].restart_count == 1 and statuses[0].state.running and statuses[0]

    cs = wait_for(restarted, "sturdy to run again", 60)
    assert (cs.last_state.terminated.exit_code, cs.last_state.terminated.reason) == (137, "Error")
    wait_for(lambda: _log(agents[0], namespace, "sturdy").count("up") == 2, "the second run's output", 30)


def test_init_containers_run_first_and_a_failing_one_fails_the_pod(
    api_client: Any, namespace: str, agents: list[NodeAgentProcess]
) -> None:
    core: Any = client.CoreV1Api(api_client)
    shared = [{"name": "work", "mountPath": "/work-shared"}]
    init = {"name": "prepare", "image": "kubeinfer/test:dev", "volumeMounts": shared,
            "command": ["python", "-c", "open('/work-shared/ready', 'w').write('prepared')"]}  # fmt: skip
    good = pool_pod("with-init", "print(open('/work-shared/ready').read())", container={"volumeMounts": shared},
                initContainers=[init], volumes=[{"name": "work", "emptyDir": {}}])  # fmt: skip
    bad_init = {**init, "command": ["python", "-c", "raise SystemExit(7)"]}
    bad = pool_pod("bad-init", "print('must not run')", initContainers=[bad_init],
               volumes=[{"name": "work", "emptyDir": {}}])  # fmt: skip
    core.create_namespaced_pod(namespace, good)
    core.create_namespaced_pod(namespace, bad)
    assert (
        wait_for(lambda: _finished(core, namespace, "with-init"), "with-init to finish", 60).status.phase == "Succeeded"
    )
    assert _log(agents[0], namespace, "with-init") == "prepared\n"
    failed = wait_for(lambda: _finished(core, namespace, "bad-init"), "bad-init to fail", 60)
    assert failed.status.phase == "Failed"
    assert failed.status.init_container_statuses[0].state.terminated.exit_code == 7
    assert failed.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    assert not agents[0].container_log(namespace, "bad-init", "main").exists()


def test_a_volume_over_the_checkout_keeps_the_project_environment(
    api_client: Any, namespace: str, agents: list[NodeAgentProcess]
) -> None:
    """An emptyDir at the checkout's top folder (as /tmp is, for a clone under /tmp) hides neither venv nor sources."""
    core: Any = client.CoreV1Api(api_client)
    repo = Path(__file__).resolve().parents[2]
    top = "/" + repo.parts[1]
    script = f"""
        import kubeinfer_runtime, os, sys
        open("{top}/written-in-the-pod", "w").write("x")
        print(os.path.dirname(kubeinfer_runtime.__file__), sorted(os.listdir("{top}")))
    """
    pod = pool_pod("shadowed", script, container={"volumeMounts": [{"name": "scratch", "mountPath": top}]},
                     volumes=[{"name": "scratch", "emptyDir": {}}])  # fmt: skip
    core.create_namespaced_pod(namespace, pod)
    done = wait_for(lambda: _finished(core, namespace, "shadowed"), "shadowed to finish", 60)
    log = _log(agents[0], namespace, "shadowed")
    assert done.status.phase == "Succeeded", log
    assert log.split()[0] == str(repo / "runtime" / "kubeinfer_runtime"), log
    assert "written-in-the-pod" in log, "the pod writes into its emptyDir"
    assert not Path(top, "written-in-the-pod").exists(), "and not into the host folder it covers"


IDENTITY = """
import json, os, sys
report = {"ids": [os.getuid(), os.getgid(), sorted(os.getgroups())],
          "nnp": open("/proc/self/status").read().split("NoNewPrivs:")[1].split()[0], "writes": {}}
for path in ["/scratch/out", "/etc/kubeinfer-probe", sys.prefix + "/probe", os.path.dirname(json.__file__) + "/probe",
             "/dev/termination-log"]:
    try:
        with open(path, "w") as f:
            f.write("x")
        report["writes"][path] = "ok"
    except OSError as err:
        report["writes"][path] = err.strerror
report["group"] = os.stat("/scratch/out").st_gid
report["token"] = len(open("/var/run/secrets/kubernetes.io/serviceaccount/token").read()) > 0
print(json.dumps(report))
"""


def test_security_context_sets_the_user_groups_and_a_read_only_root(
    api_client: Any, namespace: str, agents: list[NodeAgentProcess]
) -> None:
    """runAsUser/Group, fsGroup (owning the volumes), supplementalGroups, no_new_privs and readOnlyRootFilesystem
    reach the process: it writes its volumes and its termination file, and nothing else, not even the files
    of the interpreter it runs (which a 0700 folder above them must not hide either)."""
    core: Any = client.CoreV1Api(api_client)
    restricted = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    pod = pool_pod("confined", IDENTITY, container={"securityContext": restricted,
                                                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
                   securityContext={"runAsUser": 1000, "runAsGroup": 1001, "fsGroup": 2000,
                                    "supplementalGroups": [3000]},
                   volumes=[{"name": "scratch", "emptyDir": {}}])  # fmt: skip
    core.create_namespaced_pod(namespace, pod)
    done = wait_for(lambda: _finished(core, namespace, "confined"), "confined to finish", 60)
    log = _log(agents[0], namespace, "confined")
    assert done.status.phase == "Succeeded", log
    report = json.loads(log.splitlines()[-1])
    assert report["ids"] == [1000, 1001, [1001, 2000, 3000]]
    assert report["nnp"] == "1"
    writes = report["writes"]
    assert writes.pop("/scratch/out") == "ok" and writes.pop("/dev/termination-log") == "ok", report
    assert set(writes.values()) == {"Read-only file system"}, report
    assert report["group"] == 2000, "files made in an fsGroup volume belong to the group"
    assert report["token"], "the service account token stays readable for the user"


def test_run_as_non_root_refuses_root_and_takes_the_image_user(
    api_client: Any, namespace: str, agents: list[NodeAgentProcess]
) -> None:
    """runAsNonRoot refuses uid 0 (asked for, or the image's) before the process starts, as kubelet does; an
    image whose user is not root runs as that user."""
    core: Any = client.CoreV1Api(api_client)
    probe = "import os; print(os.getuid(), os.getgid())"
    explicit = pool_pod("explicit-root", probe, securityContext={"runAsNonRoot": True, "runAsUser": 0})
    image_root = pool_pod("image-root", probe, container={"securityContext": {"runAsNonRoot": True}})
    image_user = pool_pod("image-user", probe, container={"image": "registry.local/echoer:1.0",
                                                          "securityContext": {"runAsNonRoot": True}})
    for pod in (explicit, image_root, image_user):
        core.create_namespaced_pod(namespace, pod)
    for name, why in (("explicit-root", "container's runAsUser breaks non-root policy"),
                      ("image-root", "container has runAsNonRoot and image will run as root")):
        waiting = wait_for(lambda n=name: _waiting(core, namespace, n), f"{name} to report why it waits", 60)
        assert waiting.reason == "CreateContainerConfigError" and why in waiting.message, waiting
        assert not read_text(agents[0].container_log(namespace, name, "main")), "no process was started"
    done = wait_for(lambda: _finished(core, namespace, "image-user"), "image-user to finish", 60)
    assert done.status.phase == "Succeeded"
    assert _log(agents[0], namespace, "image-user").split() == ["1000", "1000"]


GRACEFUL = """
import signal, sys, time
def bye(*_):
    print("got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
time.sleep(3600)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
print("ready", flush=True)
time.sleep(3600)
print("survived", flush=True)
"""


@pytest.mark.parametrize(
    ("script", "grace", "last_words"), [(GRACEFUL, 30, "got SIGTERM"), (STUBBORN, 2, "ignoring SIGTERM")]
)
def test_pod_deletion_stops_processes_within_grace(
    api_client: Any, namespace: str, agents: list[NodeAgentProcess], script: str, grace: int, last_words: str
) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, pool_pod("victim", script, terminationGracePeriodSeconds=grace))
    log_file = agents[0].container_log(namespace, "victim", "main")
    wait_for(lambda: "ready" in _log(agents[0], namespace, "victim"), "victim to start", 60)
    uid = _read(core, namespace, "victim").metadata.uid

    core.delete_namespaced_pod("victim", namespace)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, "victim to be gone from the API", grace + 20)
    assert last_words in log_file.read_text()
    assert "survived" not in log_file.read_text()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert uid[:13] not in netns


def _waiting(core: Any, namespace: str, name: str) -> Any:
    statuses = _read(core, namespace, name).status.container_statuses or []
    return statuses and statuses[0].state.waiting


def test_image_entrypoints_and_config_errors(api_client: Any, namespace: str, agents: list[NodeAgentProcess]) -> None:
    core: Any = client.CoreV1Api(api_client)
    echo = pool_pod("echo", "", container={"image": "registry.local/echoer:1.0", "args": ["hello", "$(WHO)"],
                                       "env": [{"name": "WHO", "value": "world"}]})  # fmt: skip
    del echo["spec"]["containers"][0]["command"]
    unknown = pool_pod("unknown", "", container={"image": "busybox:1.36"})
    del unknown["spec"]["containers"][0]["command"]
    late_env = [{"name": "V", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "v"}}}]
    late = pool_pod("late", "import os; print('v is', os.environ['V'])", container={"env": late_env})
    for pod in (echo, unknown, late):
        core.create_namespaced_pod(namespace, pod)

    waiting = wait_for(lambda: _waiting(core, namespace, "unknown"), "unknown to report why it waits", 60)
    wait_for(lambda: (w := _waiting(core, namespace, "unknown")) and w.reason == "CreateContainerConfigError", "", 30)
    assert "--entrypoint busybox=" in _waiting(core, namespace, "unknown").message, waiting
    late_waiting = wait_for(lambda: _waiting(core, namespace, "late"), "late to wait for its ConfigMap", 60)
    assert late_waiting.reason == "CreateContainerConfigError"
    assert 'configmap "later" not found' in late_waiting.message
    assert _read(core, namespace, "late").status.phase == "Pending"
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=late").items
    assert any(e.reason == "Failed" and "later" in e.message for e in events)

    core.create_namespaced_config_map(namespace, {"metadata": {"name": "later"}, "data": {"v": "42"}})

    def succeeded(name: str) -> bool:
        return bool(_read(core, namespace, name).status.phase == "Succeeded")

    wait_for(lambda: succeeded("echo") and succeeded("late"), "echo and late to succeed", 60)
    logs = {n: _log(agents[0], namespace, n) for n in ("echo", "late")}
    assert logs == {"echo": "hello world\n", "late": "v is 42\n"}


def test_crashed_agent_leaves_pods_until_cleanup(
    control_plane: ControlPlane, api_client: Any, namespace: str, tmp_path: Path
) -> None:
    core: Any = client.CoreV1Api(api_client)
    agent = NodeAgentProcess(control_plane.admin_kubeconfig, ["na-crash"], tmp_path, api_port=control_plane.api_port,
                             extra_args=OWN_NODES)
    try:
        agent.start()
        pod = pool_pod("orphan", "import time; print('up', flush=True); time.sleep(3600)", nodeName="na-crash")
        core.create_namespaced_pod(namespace, pod)
        wait_for(lambda: "up" in _log(agent, namespace, "orphan"), "orphan to start", 60)
        uid = _read(core, namespace, "orphan").metadata.uid

        def netns_of_pod() -> bool:
            listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
            return uid[:13] in listing

        agent.kill(keep_pods=True)  # like a kubelet crash: the pod's processes survive
        assert netns_of_pod()
        agent.cleanup()
        assert not netns_of_pod()
    finally:
        agent.stop()
        core.delete_node("na-crash")


def test_agent_shutdown_fails_its_pods_like_a_node_shutdown(
    control_plane: ControlPlane, api_client: Any, namespace: str, tmp_path: Path
) -> None:
    """A pod whose process exited 0 because its node went away is Failed/Terminated, not Completed: its
    Deployment must replace it (`make dev-cluster-down` then `up` waited for such a pod before)."""
    core: Any = client.CoreV1Api(api_client)
    node = f"na-down-{uuid.uuid4().hex[:5]}"
    agent = NodeAgentProcess(control_plane.admin_kubeconfig, [node], tmp_path, api_port=control_plane.api_port,
                             extra_args=OWN_NODES)
    try:
        agent.start()
        script = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); " \
                 "print('up', flush=True); time.sleep(3600)"
        core.create_namespaced_pod(namespace, pool_pod("served", script, nodeName=node, restartPolicy="Always"))
        wait_for(lambda: "up" in _log(agent, namespace, "served"), "served to start", 60)
        agent.stop()
        status = _read(core, namespace, "served").status
        assert (status.phase, status.reason) == ("Failed", "Terminated"), status
        assert status.container_statuses[0].state.terminated.exit_code == 0
    finally:
        agent.stop()
        core.delete_node(node)


def _taints(node: Any) -> list[tuple[str, str]]:
    return [(t.key, t.effect) for t in node.spec.taints or []]


def _ready(conditions: Any) -> str:
    return str({c.type: c.status for c in conditions or []}.get("Ready"))


def test_paused_agent_makes_node_not_ready_and_recovers(
    control_plane: ControlPlane, api_client: Any, namespace: str, tmp_path: Path
) -> None:
    core: Any = client.CoreV1Api(api_client)
    agent = NodeAgentProcess(
        control_plane.admin_kubeconfig, ["na-pause"], tmp_path, api_port=control_plane.api_port, gpus=2,
        extra_args=OWN_NODES,
    )

    def node_ready() -> str:
        return _ready(core.read_node("na-pause").status.conditions)

    def pod_ready() -> str:
        return _ready(_read(core, namespace, "steady").status.conditions)

    try:
        agent.start()
        node = core.read_node("na-pause")
        assert node.status.capacity["nvidia.com/gpu"] == "2" and node.status.allocatable["cpu"] == "8"
        assert ("kubeinfer-e2e/pool", "NoSchedule") in _taints(node), \
            "registered with its taint (--register-with-taints), so no other test's pod lands there"
        # The node-lifecycle controller may have tainted it not-ready before its first status; Ready clears that.
        wait_for(lambda: _taints(core.read_node("na-pause")) == [("kubeinfer-e2e/pool", "NoSchedule")],
                 "na-pause to carry only its own taint once Ready", 30)
        pod = pool_pod("steady", "import time; time.sleep(3600)", nodeName="na-pause", restartPolicy="Always")
        core.create_namespaced_pod(namespace, pod)
        wait_for(lambda: pod_ready() == "True", "steady to be Ready", 60)

        agent.pause()  # leases stop; the pod's process keeps running, as on a partitioned node
        wait_for(lambda: node_ready() == "Unknown", "the node-lifecycle controller to mark na-pause Unknown", 60)
        wait_for(lambda: pod_ready() == "False", "the controller to mark steady not Ready", 30)
        agent.resume()
        wait_for(lambda: node_ready() == "True", "na-pause Ready again", 30)
        wait_for(lambda: pod_ready() == "True", "the agent to report steady Ready again", 30)
        assert _read(core, namespace, "steady").status.container_statuses[0].restart_count == 0
    finally:
        agent.stop()
        core.delete_node("na-pause")
