"""What makes a worker pod meet the `restricted` Pod Security Standard with a read-only root filesystem.

The worker writes only to: $HOME (the model cache $KUBEINFER_CACHE or ~/.cache/kubeinfer, HF_HOME,
torch/triton/CUDA caches under ~/.cache, ~/.triton, ~/.nv), /tmp (torchrun's run and log dirs, the
Prometheus multiprocess dir, torch.compile's inductor cache), /dev/shm (its own emptyDir) and
/dev/termination-log (the kubelet's file). $HOME and /tmp are emptyDirs, so the root stays read-only.
"""

from __future__ import annotations

from typing import Any

from kubeinfer_operator.builders.common import Obj

WORKER_UID = 1000
#: The runtime image's home (Dockerfile: HOME=/home/kubeinfer); set in the pod too, for other images.
WORKER_HOME = "/home/kubeinfer"
TMP_DIR = "/tmp"
SCRATCH = (("kubeinfer-home", WORKER_HOME), ("kubeinfer-tmp", TMP_DIR))
#: Requests for cpu and memory when the user sets neither a request nor a limit for them: the pod is
#: then Burstable (not the first evicted) and fits a ResourceQuota on requests. No default limits:
#: a guessed memory cap would kill model loading; a namespace LimitRange can add one.
DEFAULT_REQUESTS = {"cpu": "500m", "memory": "1Gi"}

RESTRICTED_CONTAINER: Obj = {
    "runAsNonRoot": True, "runAsUser": WORKER_UID, "runAsGroup": WORKER_UID,
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD: Obj = {
    "runAsNonRoot": True, "runAsUser": WORKER_UID, "runAsGroup": WORKER_UID, "fsGroup": WORKER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _user_paths(user_mounts: list[dict[str, Any]]) -> set[str]:
    return {str(m.get("mountPath", "")).rstrip("/") for m in user_mounts}


def scratch_volumes(user_mounts: list[dict[str, Any]]) -> list[Obj]:
    """emptyDirs for $HOME and /tmp, except where the user mounts a volume of their own (theirs wins)."""
    taken = _user_paths(user_mounts)
    return [{"name": name, "emptyDir": {}} for name, path in SCRATCH if path not in taken]


def scratch_mounts(user_mounts: list[dict[str, Any]]) -> list[Obj]:
    taken = _user_paths(user_mounts)
    return [{"name": name, "mountPath": path} for name, path in SCRATCH if path not in taken]


def scratch_env() -> list[Obj]:
    """HOME on the writable emptyDir, whatever the image says (a user's `workers.env` still wins)."""
    return [{"name": "HOME", "value": WORKER_HOME}]


def default_requests(limits: dict[str, Any], requests: dict[str, Any]) -> dict[str, Any]:
    """`requests` plus DEFAULT_REQUESTS for each resource the user left entirely unset."""
    missing = {k: v for k, v in DEFAULT_REQUESTS.items() if k not in limits and k not in requests}
    return {**requests, **missing}
