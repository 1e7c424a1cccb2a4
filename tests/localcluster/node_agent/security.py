"""Who a container runs as and what it may change, from the pod's and container's `securityContext`.

As kubelet does: the container's field wins over the pod's; with no runAsUser the image's user runs
(the agent's `--image-user`, else root, like most public images); runAsNonRoot refuses a uid 0
before the process starts; fsGroup and supplementalGroups join the process's groups;
allowPrivilegeEscalation false sets no_new_privs; readOnlyRootFilesystem leaves only the pod's
volumes writable. Enforced by the container prologue (process.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .envvars import ConfigError, image_name

Obj = dict[str, Any]
ROOT = (0, 0)


@dataclass(frozen=True)
class Identity:
    """The process credentials and restrictions of one container."""

    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    read_only_root: bool = False
    no_new_privs: bool = False


def _field(pod_ctx: Obj, ctx: Obj, name: str) -> Any:
    return ctx[name] if ctx.get(name) is not None else pod_ctx.get(name)


def identity(pod: Obj, container: Obj, image_users: dict[str, tuple[int, int]]) -> Identity:
    """The container's identity; ConfigError (CreateContainerConfigError) where runAsNonRoot forbids it."""
    pod_ctx: Obj = pod["spec"].get("securityContext") or {}
    ctx: Obj = container.get("securityContext") or {}
    image_uid, image_gid = image_users.get(image_name(container.get("image", "")), ROOT)
    uid = _field(pod_ctx, ctx, "runAsUser")
    gid = _field(pod_ctx, ctx, "runAsGroup")
    uid = image_uid if uid is None else int(uid)
    gid = (image_gid if uid == image_uid else 0) if gid is None else int(gid)
    if _field(pod_ctx, ctx, "runAsNonRoot") and uid == 0:
        meta = pod["metadata"]
        why = (
            "container's runAsUser breaks non-root policy"
            if _field(pod_ctx, ctx, "runAsUser") is not None
            else "container has runAsNonRoot and image will run as root"
        )
        where = f'pod: "{meta["name"]}_{meta["namespace"]}({meta.get("uid", "")})", container: {container["name"]}'
        raise ConfigError(f"{why} ({where})")
    groups = [int(g) for g in pod_ctx.get("supplementalGroups") or []]
    if pod_ctx.get("fsGroup") is not None:
        groups.append(int(pod_ctx["fsGroup"]))
    return Identity(
        uid=uid,
        gid=gid,
        groups=tuple(dict.fromkeys([gid, *groups])),
        read_only_root=bool(ctx.get("readOnlyRootFilesystem")),
        no_new_privs=ctx.get("allowPrivilegeEscalation") is False,
    )


def image_users(values: dict[str, str]) -> dict[str, tuple[int, int]]:
    """`--image-user IMAGE=UID[:GID]` values -> image name -> (uid, gid)."""
    out = {}
    for image, raw in values.items():
        uid, _, gid = raw.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise SystemExit(f"--image-user {image}={raw}: expected UID or UID:GID, numbers, e.g. {image}=1000:1000")
        out[image] = (int(uid), int(gid or uid))
    return out
