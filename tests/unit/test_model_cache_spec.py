"""spec.model.cache and the fan-out port: validation, the CRD, the worker pod, and outputs that ignore the cache."""

from __future__ import annotations

from typing import Any

import pytest
from unit.builders import JobBuilder

from kubeinfer_api.crd import build_crd
from kubeinfer_api.jobconfig import make_job_config
from kubeinfer_api.naming import MODEL_CACHE_DIR, MODEL_CACHE_ENV, MODEL_PEER_PORT, worker_addr
from kubeinfer_api.validation import SpecError
from kubeinfer_operator.builders import build_statefulset
from kubeinfer_runtime.ledger import fingerprint
from kubeinfer_runtime.strategies.base import Item


def pod(job: JobBuilder) -> dict[str, Any]:
    spec: dict[str, Any] = build_statefulset(job.ref(), job.spec(), "img", 0)["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize(("cache", "volume"), [
    ({"claimName": "models"}, {"name": "model-cache", "persistentVolumeClaim": {"claimName": "models"}}),
    ({"hostPath": "/var/lib/models"},
     {"name": "model-cache", "hostPath": {"path": "/var/lib/models", "type": "DirectoryOrCreate"}}),
])
def test_the_cache_is_mounted_where_the_runtime_looks(cache: dict[str, str], volume: dict[str, Any]) -> None:
    spec = pod(JobBuilder().set("model.cache", cache))
    container = spec["containers"][0]
    assert volume in spec["volumes"]
    assert {"name": "model-cache", "mountPath": MODEL_CACHE_DIR} in container["volumeMounts"]
    assert {"name": MODEL_CACHE_ENV, "value": MODEL_CACHE_DIR} in container["env"]


def test_no_cache_no_volume_and_the_peer_port_is_declared() -> None:
    spec = pod(JobBuilder())
    container = spec["containers"][0]
    assert all(v["name"] != "model-cache" for v in spec["volumes"])
    assert all(e["name"] != MODEL_CACHE_ENV for e in container["env"])
    # The pod's own copy lives on an emptyDir (the root filesystem is read-only; each pod has its own).
    assert {"name": "model-files", "emptyDir": {}} in spec["volumes"]
    assert {"name": "model-files", "mountPath": "/var/cache/kubeinfer/pod"} in container["volumeMounts"]
    assert {"name": "KUBEINFER_CACHE", "value": "/var/cache/kubeinfer/pod"} in container["env"]
    assert {"name": "model-peers", "containerPort": MODEL_PEER_PORT, "protocol": "TCP"} in container["ports"]
    assert worker_addr("cats", "team-a", 2) == "cats-workers-2.cats-workers.team-a.svc"


@pytest.mark.parametrize("cache", [{}, {"claimName": "models", "hostPath": "/var/lib/models"}])
def test_exactly_one_kind_of_cache(cache: dict[str, str]) -> None:
    with pytest.raises(SpecError, match=r"spec.model.cache: set exactly one of claimName .* or hostPath"):
        JobBuilder().set("model.cache", cache).spec()
    rules = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "model"]["properties"]["cache"]["x-kubernetes-validations"]
    assert rules[0]["rule"] == "has(self.claimName) != has(self.hostPath)"


def test_relative_host_path_is_rejected() -> None:
    with pytest.raises(SpecError, match=r"spec.model.cache.hostPath"):
        JobBuilder().set("model.cache", {"hostPath": "var/lib/models"}).spec()


def test_the_cache_does_not_change_which_outputs_a_job_owns() -> None:
    items = [Item(index=0, id="00000", prompt="a cat", seed=0)]
    plain = fingerprint(make_job_config("cats", JobBuilder().spec()), items)
    cached = fingerprint(make_job_config("cats", JobBuilder().set("model.cache", {"claimName": "m"}).spec()), items)
    assert plain["fingerprint"] == cached["fingerprint"]
