"""The chart's admission policies (templates/policies), rendered for any operator identity.

test_operator_smoke runs the operator under its own ServiceAccount, not the chart's: it applies the
chart's operator-scope policy for that account, so its whole control loop runs under the policy too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from e2e.support.cluster import CHART, wait_for
from localcluster.binaries import cache_dir

#: The node directory below which e2e jobs keep hostPath model caches (test_coldstart): the e2e install
#: lists it in policies.jobAuthors.allowedCacheHostPaths, so the job-author policy allows it and no other.
CACHE_HOST_DIR = cache_dir() / "e2e"

OPERATOR_SCOPE = "templates/policies/operator-scope.yaml"
JOB_AUTHORS = "templates/policies/job-authors.yaml"


def render(helm: str, template: str, release: str, namespace: str, *sets: str) -> str:
    """`helm template --show-only` of one policy template of the chart."""
    argv = [helm, "template", release, str(CHART), "--namespace", namespace, "--show-only", template,
            *(arg for value in sets for arg in ("--set", value))]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_until_enforced(kubectl: Callable[..., subprocess.CompletedProcess[str]], user: str, namespace: str) -> None:
    """The apiserver loads policies asynchronously: wait until an unlabelled ConfigMap is refused to `user`."""

    def refused() -> bool:
        result = kubectl("create", "configmap", "scope-probe", "-n", namespace, "--dry-run=server", f"--as={user}",
                         check=False)  # fmt: skip
        return result.returncode != 0 and "kubeinfer operator scope" in result.stderr

    wait_for(refused, f"the operator-scope policy to refuse {user}", 60)
