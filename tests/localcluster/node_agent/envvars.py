"""Container environment exactly as kubelet builds it: envFrom, env, downward API and $(VAR)."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from typing import Any

from kubernetes.utils import parse_quantity

Obj = dict[str, Any]
# (kind, namespace, name) -> the object's data, or None when it does not exist
Lookup = Callable[[str, str, str], dict[str, str] | None]


class ConfigError(Exception):
    """The pod cannot start as specified (kubelet's CreateContainerConfigError)."""


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Obj, path: str) -> str:
    """Value of a downward-API `fieldRef.fieldPath`."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    m = _SUBSCRIPT.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(p["ip"] for p in status.get("podIPs", [])),
    }
    if path not in simple:
        raise ConfigError(f"fieldRef.fieldPath {path!r} is not supported by the test node agent")
    return str(simple[path])


def resource_value(container: Obj, ref: Obj, node_capacity: dict[str, str]) -> str:
    """Value of a `resourceFieldRef` (limits default to the node's allocatable, as in kubelet)."""
    kind, _, name = ref["resource"].partition(".")
    resources = container.get("resources", {})
    raw = (resources.get(kind) or {}).get(name) or node_capacity.get(name, "0")
    value = parse_quantity(raw) / parse_quantity(ref.get("divisor", "1"))  # type: ignore[no-untyped-call]
    return str(math.ceil(value))


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown names stay as written, `$$` escapes."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and ")" in text[i + 2 :]:
            end = text.index(")", i + 2)
            name = text[i + 2 : end]
            out.append(env.get(name, text[i : end + 1]))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _ref_data(lookup: Lookup, kind: str, namespace: str, ref: Obj, field: str) -> dict[str, str] | None:
    data = lookup(kind, namespace, ref["name"])
    if data is None and not ref.get("optional"):
        raise ConfigError(f'{field}: {kind.lower()} "{ref["name"]}" not found')
    return data


def _key_ref(lookup: Lookup, kind: str, namespace: str, ref: Obj, field: str) -> str | None:
    data = _ref_data(lookup, kind, namespace, ref, field)
    if data is None:
        return None
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise ConfigError(f'{field}: key "{ref["key"]}" not found in {kind.lower()} "{ref["name"]}"')
    return data[ref["key"]]


def _env_from(container: Obj, namespace: str, lookup: Lookup) -> dict[str, str]:
    env: dict[str, str] = {}
    for i, source in enumerate(container.get("envFrom", [])):
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                data = _ref_data(lookup, kind, namespace, source[key], f"envFrom[{i}].{key}")
                env.update({prefix + k: v for k, v in (data or {}).items()})
    return env


def _env_var(pod: Obj, container: Obj, var: Obj, lookup: Lookup, node_capacity: dict[str, str]) -> str | None:
    field = f"env[{var['name']}].valueFrom"
    source = var["valueFrom"]
    namespace = pod["metadata"]["namespace"]
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in source:
        return resource_value(container, source["resourceFieldRef"], node_capacity)
    if "configMapKeyRef" in source:
        return _key_ref(lookup, "ConfigMap", namespace, source["configMapKeyRef"], field + ".configMapKeyRef")
    if "secretKeyRef" in source:
        return _key_ref(lookup, "Secret", namespace, source["secretKeyRef"], field + ".secretKeyRef")
    raise ConfigError(f"{field}: unsupported source {sorted(source)}")


def container_env(
    pod: Obj, container: Obj, lookup: Lookup, base: dict[str, str], node_capacity: dict[str, str]
) -> dict[str, str]:
    """Environment of one container: `base` (PATH, service env...) < envFrom < env."""
    env = dict(base)
    env.update(_env_from(container, pod["metadata"]["namespace"], lookup))
    for var in container.get("env", []):
        if "valueFrom" in var:
            value = _env_var(pod, container, var, lookup, node_capacity)
            if value is not None:
                env[var["name"]] = value
        else:
            env[var["name"]] = expand(var.get("value", ""), env)
    return env


def image_name(image: str) -> str:
    """`ghcr.io/org/kubeinfer-operator:0.1@sha256:...` -> `kubeinfer-operator`."""
    path = image.split("@", 1)[0]
    last = path.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def command_line(container: Obj, env: dict[str, str], entrypoints: dict[str, list[str]]) -> list[str]:
    """command (or the configured entrypoint of the image) + args, with $(VAR) expanded."""
    command = container.get("command") or entrypoints.get(image_name(container.get("image", "")))
    if not command:
        raise ConfigError(
            f"container {container['name']!r}: the test node agent cannot read the entrypoint of image "
            f"{container.get('image')!r}; set spec.containers[].command or start the agent with "
            f"--entrypoint {image_name(container.get('image', ''))}='[\"cmd\"]'"
        )
    return [expand(a, env) for a in [*command, *container.get("args", [])]]


def decode_secret(data: dict[str, str] | None) -> dict[str, str] | None:
    """Secrets arrive base64-encoded; env and files want the plain text."""
    if data is None:
        return None
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
