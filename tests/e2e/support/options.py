"""The `--cluster=local|kind` switch: the only place the e2e suite learns which cluster it targets.

Register it from tests/conftest.py (an initial conftest, so the option exists for every run):

    from e2e.support.options import pytest_addoption  # noqa: F401  (--cluster=local|kind)

Without that line the suite still runs, on the local cluster (or on $KUBEINFER_E2E_CLUSTER).
"""

from __future__ import annotations

import os

import pytest

CLUSTERS = ("local", "kind")
ENV_VAR = "KUBEINFER_E2E_CLUSTER"


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--cluster`: local (built from source, pods as processes) or kind (Docker, see hack/kind-e2e.sh)."""
    parser.addoption(
        "--cluster",
        choices=CLUSTERS,
        default=os.environ.get(ENV_VAR, "local"),
        help="where the e2e tests run: local (real control plane + test node agent) or kind "
        f"(an existing kind cluster from hack/kind-e2e.sh; KUBECONFIG and KUBEINFER_E2E_S3_* set). Env: {ENV_VAR}",
    )


def cluster_kind(config: pytest.Config) -> str:
    """The selected cluster; falls back to the env var when the option is not registered."""
    value = config.getoption("--cluster", default=None) or os.environ.get(ENV_VAR, "local")
    if value not in CLUSTERS:
        raise pytest.UsageError(f"--cluster={value!r}: use one of {', '.join(CLUSTERS)}")
    return str(value)
