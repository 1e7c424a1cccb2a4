"""The job's NetworkPolicy, enforced by kind's CNI (kindnet): a pod outside the job cannot reach the
rendezvous port of a running worker, while the metrics port of the same worker answers it.

Kind only (tests/e2e/kindonly/conftest.py deselects it elsewhere): the local node agent enforces no
NetworkPolicy. The job itself running to Complete shows that its own pods still reach each other
(rendezvous, gloo's ephemeral ports).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.support.cluster import Cluster, wait_for
from e2e.support.jobs import fault_job, launch, succeeded
from kubeinfer_api.naming import workers

pytestmark = pytest.mark.e2e
RUNTIME_IMAGE = "kubeinfer/kubeinfer-runtime:e2e"
#: Connects to each port of the worker and prints {port: "open" | error}; short timeouts, no retries.
PROBE = """
import json, socket, sys
host, ports, out = sys.argv[1], [int(p) for p in sys.argv[2:]], {}
for port in ports:
    try:
        socket.create_connection((host, port), timeout=5).close()
        out[port] = "open"
    except OSError as error:
        out[port] = type(error).__name__
print(json.dumps(out))
"""


def probe_pod(name: str, host: str, ports: list[int]) -> dict[str, Any]:
    """A restricted pod with no job labels, running PROBE with the runtime image (already on the nodes)."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": RUNTIME_IMAGE, "imagePullPolicy": "Never",
                "command": ["python3", "-c", PROBE, host, *map(str, ports)],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True},
            }],
        },
    }


def test_outside_pod_cannot_reach_the_rendezvous_port(operator: Cluster, job_namespace: str, tiny_models: Any) -> None:
    manifest = fault_job("fenced", job_namespace)
    job = launch(operator, job_namespace, manifest)
    operator.wait_job(job, job_namespace, lambda j: succeeded(j) >= 1, "first item committed (ranks running)", 300)
    policy = operator.get("networkpolicy", workers(job), job_namespace)
    assert policy is not None, "the operator created no NetworkPolicy"
    master = operator.get("pod", f"{workers(job)}-0", job_namespace)
    assert master is not None and master["status"].get("podIP"), "worker 0 has no IP"
    port, metrics = manifest["spec"].get("rendezvous", {}).get("port", 29500), 9400

    operator.apply(probe_pod("outsider", master["status"]["podIP"], [metrics, port]), job_namespace)
    wait_for(lambda: (operator.get("pod", "outsider", job_namespace) or {}).get("status", {}).get("phase")
             in ("Succeeded", "Failed"), "the probe pod to finish", 120, interval=1)
    reached = json.loads(operator.kubectl("logs", "outsider", "-n", job_namespace).stdout.strip().splitlines()[-1])
    assert reached[str(metrics)] == "open", f"the metrics port must stay scrapable: {reached}"
    assert reached[str(port)] != "open", f"a pod outside the job reached the rendezvous port: {reached}"
    operator.wait_condition(job, job_namespace, "Complete", 600)
