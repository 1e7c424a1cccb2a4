"""Pod volumes as host directories, bind-mounted at their mountPath inside the container.

configMap, secret, downwardAPI and projected volumes (with serviceAccountToken, so the default
kube-api-access volume works) are written as files; emptyDir is a directory (a tmpfs when its
medium is Memory); hostPath is the host path itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

from .envvars import ConfigError, Lookup, field_value

Obj = dict[str, Any]
# (namespace, serviceaccount, audiences, expirationSeconds, pod) -> token
TokenIssuer = Callable[[str, str, list[str], int, Obj], str]


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def _write_files(root: Path, files: dict[str, str], mode: int) -> None:
    for rel, text in files.items():
        path = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ConfigError(f"volume item path {rel!r} must be relative and stay inside the volume")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)


def _own(root: Path, pod: Obj) -> None:
    """fsGroup, as kubelet applies it: the volume's files belong to the group, which may read them (and
    write the folders), and new files inherit it (setgid folders)."""
    group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    if group is None:
        return
    for path in [root, *root.rglob("*")]:
        os.chown(path, -1, int(group), follow_symlinks=False)
        mode = path.stat().st_mode
        path.chmod(mode | 0o2070 if path.is_dir() else mode | 0o040)


def _keyed(data: dict[str, str] | None, items: list[Obj] | None, what: str) -> dict[str, str]:
    """Select `items` (key -> path) from `data`, or every key when no items are given."""
    if data is None:
        return {}
    if not items:
        return dict(data)
    out = {}
    for item in items:
        if item["key"] not in data:
            raise ConfigError(f'{what}: key "{item["key"]}" not found')
        out[item["path"]] = data[item["key"]]
    return out


def _ref_files(lookup: Lookup, kind: str, ns: str, name: str, source: Obj, what: str) -> dict[str, str]:
    data = lookup(kind, ns, name)
    if data is None and not source.get("optional"):
        raise ConfigError(f'{what}: {kind.lower()} "{name}" not found')
    return _keyed(data, source.get("items"), what)


def _downward_files(pod: Obj, source: Obj) -> dict[str, str]:
    out = {}
    for item in source.get("items", []):
        if "fieldRef" not in item:
            raise ConfigError(f"downwardAPI item {item['path']!r}: only fieldRef is supported by the test node agent")
        out[item["path"]] = field_value(pod, item["fieldRef"]["fieldPath"])
    return out


def _projected_files(pod: Obj, source: Obj, lookup: Lookup, issue: TokenIssuer, what: str) -> dict[str, str]:
    ns = pod["metadata"]["namespace"]
    out: dict[str, str] = {}
    for i, src in enumerate(source.get("sources", [])):
        where = f"{what}.sources[{i}]"
        if "serviceAccountToken" in src:
            tok = src["serviceAccountToken"]
            sa = pod["spec"].get("serviceAccountName") or "default"
            audiences = [tok["audience"]] if tok.get("audience") else []
            out[tok["path"]] = issue(ns, sa, audiences, int(tok.get("expirationSeconds", 3600)), pod)
        elif "configMap" in src:
            out.update(_ref_files(lookup, "ConfigMap", ns, src["configMap"]["name"], src["configMap"], where))
        elif "secret" in src:
            out.update(_ref_files(lookup, "Secret", ns, src["secret"]["name"], src["secret"], where))
        elif "downwardAPI" in src:
            out.update(_downward_files(pod, src["downwardAPI"]))
        else:
            raise ConfigError(f"{where}: unsupported projected source {sorted(src)}")
    return out


def _materialize_one(pod: Obj, vol: Obj, root: Path, lookup: Lookup, issue: TokenIssuer) -> str:
    """Create one volume under `root`; returns the host path to bind-mount."""
    ns, name = pod["metadata"]["namespace"], vol["name"]
    what = f"volumes[{name}]"
    path = root / name
    if "hostPath" in vol:
        return str(vol["hostPath"]["path"])
    if "emptyDir" in vol:
        if not path.exists():
            path.mkdir(parents=True)
            if vol["emptyDir"].get("medium") == "Memory":
                size = vol["emptyDir"].get("sizeLimit")
                # tmpfs takes bytes or k/m/g, not a Kubernetes quantity ("8Gi" is refused: Bad value for 'size')
                opts = ["-o", f"size={int(parse_quantity(size))}"] if size else []  # type: ignore[no-untyped-call]
                subprocess.run(["mount", "-t", "tmpfs", *opts, "tmpfs", str(path)], check=True)
            path.chmod(0o777)  # kubelet's emptyDir mode: writable by any container user
            _own(path, pod)
        return str(path)
    if "configMap" in vol:
        files = _ref_files(lookup, "ConfigMap", ns, vol["configMap"]["name"], vol["configMap"], what)
    elif "secret" in vol:
        files = _ref_files(lookup, "Secret", ns, vol["secret"]["secretName"], vol["secret"], what)
    elif "downwardAPI" in vol:
        files = _downward_files(pod, vol["downwardAPI"])
    elif "projected" in vol:
        files = _projected_files(pod, vol["projected"], lookup, issue, what)
    else:
        kinds = sorted(k for k in vol if k != "name")
        raise ConfigError(f"{what}: volume type {kinds} is not supported by the test node agent")
    source = vol.get("configMap") or vol.get("secret") or vol.get("downwardAPI") or vol.get("projected") or {}
    tmp = root / f".{name}.new"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_files(tmp, files, int(source.get("defaultMode", 0o644)))
    _own(tmp, pod)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return str(path)


def materialize(pod: Obj, root: Path, lookup: Lookup, issue: TokenIssuer) -> dict[str, str]:
    """Write every volume of the pod; returns volume name -> host path."""
    root.mkdir(parents=True, exist_ok=True)
    return {vol["name"]: _materialize_one(pod, vol, root, lookup, issue) for vol in pod["spec"].get("volumes", [])}


def container_mounts(container: Obj, volume_paths: dict[str, str]) -> list[Mount]:
    """Bind mounts of one container, in the order given (a later mount may sit inside an earlier one)."""
    mounts = []
    for vm in container.get("volumeMounts", []):
        if vm["name"] not in volume_paths:
            raise ConfigError(f"container {container['name']!r}: volumeMounts[{vm['name']}] names no volume")
        source = volume_paths[vm["name"]]
        if vm.get("subPath"):
            source = os.path.join(source, vm["subPath"])
            if not os.path.exists(source):
                os.makedirs(source)
        mounts.append(Mount(source, vm["mountPath"], bool(vm.get("readOnly"))))
    return mounts


def release(root: Path) -> None:
    """Unmount tmpfs volumes and delete the pod's volume directories."""
    if not root.exists():
        return
    for mountpoint in mounts_under(root):
        subprocess.run(["umount", "-l", mountpoint], check=False)
    with contextlib.suppress(OSError):
        shutil.rmtree(root)


def mounts_under(root: Path) -> list[str]:
    """Host mount points below `root` (deepest first), read from /proc/mounts."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    points = []
    with open("/proc/mounts") as f:
        for line in f:
            point = line.split()[1].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)
