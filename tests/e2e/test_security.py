"""Security enforced by the apiserver: worker pods pass the `restricted` Pod Security Standard.

Server-side dry runs only (no pod runs here): the test_jobs examples run to Complete in a namespace
that enforces `restricted`; this module says in seconds which rule a worker pod breaks, if any.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from unit.builders import JobBuilder

from e2e.support.cluster import Cluster, Manifest
from kubeinfer_operator.builders import build_statefulset

pytestmark = pytest.mark.e2e
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
VIOLATION = 'violates PodSecurity "restricted:latest"'


@pytest.fixture(scope="module")
def restricted_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"restricted-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    cluster.kubectl("label", "namespace", name, RESTRICTED)
    yield name
    cluster.delete_namespace(name)


def dry_run(cluster: Cluster, namespace: str, manifest: Manifest) -> tuple[bool, str]:
    """Server-side dry-run create: (accepted, error message)."""
    result = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-o", "name", "-f", "-",
                             input=json.dumps(manifest), check=False)  # fmt: skip
    return result.returncode == 0, result.stderr


def worker_pod(job: JobBuilder, namespace: str) -> Manifest:
    """The pod the StatefulSet controller would create from the operator's template."""
    template = build_statefulset(job.ref(), job.spec(), "kubeinfer/kubeinfer-runtime:e2e", 0)["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "name": f"{job.ref().name}-workers-0", "namespace": namespace},
            "spec": template["spec"]}


@pytest.mark.parametrize("job", [
    JobBuilder("plain").nodes(2),
    JobBuilder("gpus").gpus(2).set("workers.volumes", [{"name": "m", "persistentVolumeClaim": {"claimName": "m"}}])
    .set("workers.volumeMounts", [{"name": "m", "mountPath": "/models", "readOnly": True}]),
], ids=["plain", "gpu-with-pvc"])
def test_worker_pods_meet_the_restricted_standard(cluster: Cluster, restricted_namespace: str, job: JobBuilder) -> None:
    accepted, message = dry_run(cluster, restricted_namespace, worker_pod(job, restricted_namespace))
    assert accepted, message


@pytest.mark.parametrize(("change", "rule"), [
    (lambda pod: pod["spec"]["containers"][0]["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    (lambda pod: pod["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
], ids=["root", "hostPath"])
def test_the_namespace_enforces_restricted(
    cluster: Cluster, restricted_namespace: str, change: Any, rule: str
) -> None:
    """The check above can fail: a worker pod with one restricted rule broken is refused."""
    pod = copy.deepcopy(worker_pod(JobBuilder("broken"), restricted_namespace))
    change(pod)
    accepted, message = dry_run(cluster, restricted_namespace, pod)
    assert not accepted and VIOLATION in message and rule in message, message
