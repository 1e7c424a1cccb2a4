"""Fixtures of the kubeinfer e2e tests, on whichever cluster `--cluster` names.

tests/e2e/conftest.py imports them (`from e2e.support.fixtures import *`), so every e2e module
gets: `cluster` (the facade), `nodes` (workers can run), `crd`, `operator` (installed by Helm and
Running), `job_namespace` (fresh, with the `s3-credentials` Secret) and `tiny_models` (in S3).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.support import shared
from e2e.support.cluster import Cluster
from e2e.support.models import upload_tiny_models
from e2e.support.options import cluster_kind

__all__ = ["cluster", "crd", "job_namespace", "nodes", "operator", "tiny_models"]
BUCKETS = ("models", "outputs")


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """The cluster under test, with the `models` and `outputs` buckets."""
    if cluster_kind(request.config) == "kind":
        from e2e.support.kind import KindBackend

        facade = Cluster(KindBackend.from_env())
        _create_buckets(facade)
        return facade
    from e2e.support.local import LocalBackend

    session = shared.session_of(request.config)
    backend = LocalBackend(request.getfixturevalue("control_plane"), request.getfixturevalue("s3_server"),
                           session / "nodes", session=session)
    facade = Cluster(backend)
    with _beside_serial_tests(facade), shared.exclusive(session / "buckets.lock"):
        _create_buckets(facade)
    return facade


def _create_buckets(cluster: Cluster) -> None:
    s3 = cluster.backend.s3_client()
    for bucket in BUCKETS:
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def nodes(cluster: Cluster) -> Cluster:
    """Nodes that run pods: the local node agents (kind brings its own kubelets), shared by the run."""
    from e2e.support.local import LocalBackend

    if isinstance(cluster.backend, LocalBackend):
        with _beside_serial_tests(cluster):
            cluster.backend.ensure_agents()
    return cluster


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> Cluster:
    """The generated CRD, established in the apiserver."""
    with _beside_serial_tests(cluster), _setup_lock(cluster, "crd"):
        cluster.install_crd()
    return cluster


def ensure_operator(cluster: Cluster) -> Cluster:
    """Install the chart unless a release exists (a test may have uninstalled it), wait until Running."""
    with _setup_lock(cluster, "operator"):
        if not cluster.operator_installed():
            cluster.install_operator(upgrade=True)
    cluster.wait_operator_running()
    return cluster


def _beside_serial_tests(cluster: Cluster) -> contextlib.AbstractContextManager[None]:
    """Session fixtures are set up before a test's own access to the cluster (pytest sets up wider scopes
    first): one that uses the cluster takes that access itself. Else it ran while a serial test had MinIO
    stopped (CI: a bucket listing refused), and pytest re-raised that error for every later test of the worker."""
    session = getattr(cluster.backend, "session", None)
    return shared.access(session, alone=False) if session is not None else contextlib.nullcontext()


def _setup_lock(cluster: Cluster, what: str) -> contextlib.AbstractContextManager[None]:
    """One worker at a time sets up a shared part of the cluster (the others find it done)."""
    session = getattr(cluster.backend, "session", None)
    return shared.exclusive(session / f"{what}.lock") if session is not None else contextlib.nullcontext()


@pytest.fixture
def operator(nodes: Cluster) -> Cluster:
    """The operator installed by `helm install` and Running."""
    return ensure_operator(nodes)


def new_job_namespace(cluster: Cluster, hint: str) -> str:
    """A fresh namespace with the `s3-credentials` Secret the examples name."""
    slug = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    cluster.create_s3_secret(name)
    return name


@pytest.fixture
def job_namespace(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test (deleted after); the failure dump shows its objects and logs."""
    name = new_job_namespace(cluster, request.node.name)
    yield name
    cluster.delete_namespace(name)


@pytest.fixture(scope="session")
def tiny_models(cluster: Cluster) -> dict[str, Path]:
    """The tiny random models built offline (cached) and uploaded to s3://models/tiny-<kind>/."""
    with _beside_serial_tests(cluster), _setup_lock(cluster, "tiny-models"):
        return upload_tiny_models(cluster.backend.s3_client())
