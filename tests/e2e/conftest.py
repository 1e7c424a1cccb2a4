"""Fixtures for end-to-end tests against the local control plane of real upstream components.

The binaries come from ``hack/build-tools.sh``; when they are missing the fixtures fail with that
fix in the message (never skip: a skipped e2e suite must not look like a passing one).
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from e2e.support import shared
from e2e.support.cluster import wait_for
from e2e.support.fixtures import *  # noqa: F403  (cluster, nodes, crd, operator, job_namespace, tiny_models)
from localcluster.binaries import binary, log_tail
from localcluster.controlplane import ControlPlane
from localcluster.s3 import S3Server

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def e2e_session(request: pytest.FixtureRequest) -> Path:
    """This run's shared cluster folder (see support/shared.py)."""
    return shared.session_of(request.config)


@pytest.fixture(scope="session")
def control_plane(e2e_session: Path) -> ControlPlane:
    """The run's control plane: started by the first worker that needs it, attached by the others."""
    folder = e2e_session / "controlplane"
    with shared.exclusive(e2e_session / "controlplane.lock"):
        if (folder / "state.json").exists():
            return ControlPlane.attach(folder)
        return ControlPlane(folder, detach=True).start()


@pytest.fixture(scope="session")
def s3_server(e2e_session: Path) -> S3Server:
    folder = e2e_session / "s3"
    with shared.access(e2e_session, alone=False), shared.exclusive(e2e_session / "s3.lock"):  # see fixtures.py
        if (folder / "s3.json").exists():
            server = S3Server.attach(folder)
            server.check_running()  # else every test would fail on a refused connection, not on why
            return server
        return S3Server(folder, detach=True).start()


@pytest.fixture(scope="module", autouse=True)
def _module_access(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module marked `serial` (pytestmark) disturbs the cluster for its whole run (e.g. its module
    fixture scales the shared operator to 0): nothing else runs until it is done."""
    marks = getattr(request.module, "pytestmark", [])
    marks = marks if isinstance(marks, list) else [marks]
    if any(mark.name == shared.SERIAL_MARK for mark in marks):
        with shared.access(shared.session_of(request.config), alone=True):
            yield
    else:
        yield


@pytest.fixture(autouse=True)
def _cluster_access(request: pytest.FixtureRequest, _module_access: None) -> Iterator[None]:
    """Tests share the cluster; a `serial` one runs with no other test beside it."""
    alone = request.node.get_closest_marker(shared.SERIAL_MARK) is not None
    with shared.access(shared.session_of(request.config), alone=alone):
        yield


@pytest.fixture(scope="session")
def api_client(control_plane: ControlPlane) -> Iterator[Any]:
    """An admin ``kubernetes.client.ApiClient``."""
    with control_plane.api_client() as api:
        yield api


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """Run the pinned kubectl as admin: ``kubectl("get", "pods", "-n", ns, input=None, check=True)``."""

    def run(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(binary("kubectl")), f"--kubeconfig={control_plane.admin_kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api_client: Any) -> Iterator[str]:
    """A fresh namespace per test, ready for pods (its default service account exists), deleted after."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"kubeinfer-e2e": "1"})))
    wait_for(lambda: _has_default_serviceaccount(core, name), f"default service account in {name}", 30)
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as error:
        if error.status != 404:
            raise


def _has_default_serviceaccount(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the namespace's objects, its events and component log tails to the report; on a
    failed setup, the shared MinIO's state (every e2e test needs it, and a refused connection says nothing)."""
    report: pytest.TestReport = yield
    if report.when == "setup" and report.failed:
        report.sections.append(("shared MinIO", _shared_minio_state(item.config)))
    if report.when == "call" and report.failed:
        try:
            _attach_dumps(item, report)
        except (Exception, pytest.fail.Exception) as error:
            # This hook runs outside the test's own error handling: an exception here (a kubectl
            # timeout, pytest-timeout's alarm) would end the xdist worker with an INTERNALERROR
            # and hide the test's real failure.
            report.sections.append(("diagnostics", f"could not collect the diagnostics: {error!r}"))
    return report


def _shared_minio_state(config: pytest.Config) -> str:
    folder = shared.session_of(config) / "s3"
    try:
        return S3Server.attach(folder).describe() if (folder / "s3.json").exists() else "not started yet"
    except Exception as error:  # never fail the report hook (see below)
        return f"could not read it: {error!r}"


def _attach_dumps(item: pytest.Item, report: pytest.TestReport) -> None:
    # funcargs holds every fixture in the test's closure, so a test using `namespace` has the plane.
    funcargs = getattr(item, "funcargs", {})
    cluster = funcargs.get("cluster")
    if cluster is not None:  # kubeinfer tests: objects, events, pod logs, operator log (local or kind)
        report.sections.extend(cluster.dump(funcargs.get("job_namespace")))
        return
    plane = funcargs.get("control_plane")
    if plane is None:
        return
    namespace = funcargs.get("namespace")
    if namespace:
        report.sections.append((f"namespace {namespace}", _dump_namespace(plane, namespace)))
    logs: list[Path] = list(plane.log_files())
    s3 = funcargs.get("s3_server")
    if s3 is not None:
        logs.append(s3.log_file)
    for log in logs:
        report.sections.append((f"log tail {log.name}", log_tail(log, 60)))


def _dump_namespace(plane: ControlPlane, namespace: str) -> str:
    """``kubectl get`` of every listable namespaced kind, then the events in time order."""
    kubectl = [str(binary("kubectl")), f"--kubeconfig={plane.admin_kubeconfig}"]

    def run(*args: str) -> str:
        result = subprocess.run([*kubectl, *args], capture_output=True, text=True, timeout=30)
        return result.stdout + result.stderr

    kinds = [
        k
        for k in run("api-resources", "--namespaced", "--verbs=list", "-o", "name").split()
        if k.split(".")[0] not in {"events", "endpoints"}
    ] or ["all"]
    return "\n".join(
        [
            run("get", ",".join(kinds), "-n", namespace, "-o", "wide", "--ignore-not-found"),
            run("get", "pods", "-n", namespace, "-o", "yaml"),
            run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
        ]
    )
