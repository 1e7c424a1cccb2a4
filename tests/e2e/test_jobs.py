"""Every CPU example runs to Complete through `kubectl apply`, with outputs equal to one process.

All examples are applied at once (they are independent; the cluster runs them side by side) and
each test then waits for its own job. Real pods through the node agent (or kind's kubelets), gloo
rendezvous across pods by the headless Service's DNS names, model read from the S3 server.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from unit.test_examples import CPU_EXAMPLES

from e2e.support import shared
from e2e.support.cluster import Cluster, Manifest, wait_for
from e2e.support.fixtures import ensure_operator, new_job_namespace
from e2e.support.jobs import (
    assert_same_items,
    for_test,
    item_count,
    job_outputs,
    launch,
    load_example,
    pod_threads,
    shared_reference_run,
)
from kubeinfer_api.plan import world_size
from kubeinfer_api.validation import parse_manifest

# One worker runs the module: its fixture launches every example at once (xdist would launch them per worker).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("examples")]
JOB_TIMEOUT = 900  # all examples share 2 CPU cores
# Context parallel reorders float sums (ring/all-to-all): images may differ by one 8-bit level.
PIXEL_TOLERANCE = {"context-ring": 1, "context-ulysses": 1}


#: Every example runs where the apiserver admits only pods of the restricted Pod Security Standard.
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"


@pytest.fixture(scope="module")
def job_namespace(nodes: Cluster) -> Iterator[str]:
    name = new_job_namespace(nodes, "examples")
    nodes.kubectl("label", "namespace", name, RESTRICTED)
    yield name
    nodes.delete_namespace(name)


@pytest.fixture(scope="module")
def launched(request: pytest.FixtureRequest, nodes: Cluster, job_namespace: str,
             tiny_models: Any) -> dict[str, Manifest]:  # fmt: skip
    """Every CPU example applied at once, each writing under this namespace's output prefix; beside other
    tests, not while a serial one has the cluster (a module fixture runs before the tests' own access)."""
    jobs = {name: for_test(load_example(name), job_namespace) for name in CPU_EXAMPLES}
    with shared.access(shared.session_of(request.config), alone=False):
        ensure_operator(nodes)
        for manifest in jobs.values():
            launch(nodes, job_namespace, manifest)
    return jobs


def reference_spec(manifest: Manifest) -> Manifest:
    """The same items in one process with no parallelism: the plain library call."""
    ref = copy.deepcopy(manifest)
    spec = ref["spec"]
    spec["strategy"] = {"type": "data", "batchSize": spec.get("strategy", {}).get("batchSize", 1)}
    spec["workers"] = {"nodes": 1, "gpusPerNode": 0}
    return ref


@pytest.mark.parametrize("name", CPU_EXAMPLES)
@pytest.mark.usefixtures("operator")  # installed and Running again if a test uninstalled it since `launched`
def test_example_completes_with_single_process_outputs(
    name: str, cluster: Cluster, job_namespace: str, launched: dict[str, Manifest], e2e_session: Path,
) -> None:  # fmt: skip
    manifest = launched[name]
    expected = item_count(manifest)
    # Computed while the cluster works on the jobs: the host's CPU would otherwise idle.
    reference = shared_reference_run(reference_spec(manifest), e2e_session / "references",
                                     cluster.backend.s3_host_env(), pod_threads(manifest))
    job = cluster.wait_condition(name, job_namespace, "Complete", JOB_TIMEOUT)

    status = job["status"]
    assert status["progress"]["succeeded"] == status["progress"]["total"] == expected
    assert status["plan"]["worldSize"] == world_size(parse_manifest(manifest)[1])
    assert status.get("restarts", 0) == 0, "an undisturbed job restarted"
    run = job_outputs(cluster, job_namespace, name)
    assert_same_items(run, reference, expected, pixel_tolerance=PIXEL_TOLERANCE.get(name, 0))

    # `kubectl get dinf` tells the story without reading YAML.
    header, row = cluster.kubectl("get", "dinf", name, "-n", job_namespace).stdout.splitlines()[:2]
    columns = header.split()
    shown = dict(zip(columns, row.split(None, len(columns) - 1), strict=True))  # MESSAGE, last, has spaces
    assert shown["STATE"] == "Complete" and shown["PROGRESS"].rstrip("%") == "100"
    assert shown["SUCCEEDED"] == shown["TOTAL"] == str(expected)

    # Completion tears the workers down and keeps the job.
    selector = f"kubeinfer.io/job-name={name}"
    pods = cluster.items("pods", job_namespace, selector)
    leftover = [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert not leftover or _eventually_gone(cluster, job_namespace, selector), f"workers left running: {leftover}"


def _eventually_gone(cluster: Cluster, namespace: str, selector: str) -> bool:
    wait_for(lambda: not cluster.items("pods", namespace, selector), f"pods {selector} deleted", 60, interval=1)
    return True
