"""What a worker pod needs for model I/O: a folder of its own for the model's files (an emptyDir: the
root filesystem is read-only, and the copy lives as long as the pod), the model cache volume
(`spec.model.cache`), and the port on which a pod serves its copy to the job's other pods (fan-out)."""

from __future__ import annotations

from kubeinfer_api.naming import MODEL_CACHE_DIR, MODEL_CACHE_ENV, MODEL_PEER_PORT
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_operator.builders.common import Obj

CACHE_VOLUME = "model-cache"
POD_VOLUME = "model-files"
#: The pod's own model folder (the runtime's KUBEINFER_CACHE; models go under models/).
POD_MODEL_DIR = "/var/cache/kubeinfer/pod"


def cache_volumes(spec: DistributedInferenceSpec) -> list[Obj]:
    pod = {"name": POD_VOLUME, "emptyDir": {}}
    cache = spec.model.cache
    if cache is None:
        return [pod]
    if cache.claim_name:
        return [pod, {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache.claim_name}}]
    return [pod, {"name": CACHE_VOLUME, "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}]


def cache_mounts(spec: DistributedInferenceSpec) -> list[Obj]:
    pod = {"name": POD_VOLUME, "mountPath": POD_MODEL_DIR}
    return [pod, {"name": CACHE_VOLUME, "mountPath": MODEL_CACHE_DIR}] if spec.model.cache else [pod]


def cache_env(spec: DistributedInferenceSpec) -> list[Obj]:
    pod = {"name": "KUBEINFER_CACHE", "value": POD_MODEL_DIR}
    return [pod, {"name": MODEL_CACHE_ENV, "value": MODEL_CACHE_DIR}] if spec.model.cache else [pod]


def peer_port() -> Obj:
    return {"name": "model-peers", "containerPort": MODEL_PEER_PORT, "protocol": "TCP"}
