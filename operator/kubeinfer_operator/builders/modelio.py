"""What a worker pod needs for model I/O: the model cache volume (`spec.model.cache`) and the port on
which a pod serves its copy of the model to the job's other pods (weight fan-out)."""

from __future__ import annotations

from kubeinfer_api.naming import MODEL_CACHE_DIR, MODEL_CACHE_ENV, MODEL_PEER_PORT
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_operator.builders.common import Obj

CACHE_VOLUME = "model-cache"


def cache_volumes(spec: DistributedInferenceSpec) -> list[Obj]:
    cache = spec.model.cache
    if cache is None:
        return []
    if cache.claim_name:
        return [{"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache.claim_name}}]
    return [{"name": CACHE_VOLUME, "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}]


def cache_mounts(spec: DistributedInferenceSpec) -> list[Obj]:
    return [{"name": CACHE_VOLUME, "mountPath": MODEL_CACHE_DIR}] if spec.model.cache else []


def cache_env(spec: DistributedInferenceSpec) -> list[Obj]:
    return [{"name": MODEL_CACHE_ENV, "value": MODEL_CACHE_DIR}] if spec.model.cache else []


def peer_port() -> Obj:
    return {"name": "model-peers", "containerPort": MODEL_PEER_PORT, "protocol": "TCP"}
