"""Small manifest builders for tests of pods run by the node agent (plain dicts, as kubectl takes)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
TEST_IMAGE = "kubeinfer/test:dev"  # recorded in status, never pulled


def python_pod(
    name: str, script: str, *, container: Obj | None = None, metadata: Obj | None = None, **spec: Any
) -> Obj:
    """A pod whose `main` container runs `python -c script` (restartPolicy Never unless given)."""
    main = {"name": "main", "image": TEST_IMAGE, "command": ["python", "-c", textwrap.dedent(script)]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **(metadata or {})},
        "spec": {"restartPolicy": "Never", "containers": [{**main, **(container or {})}], **spec},
    }


def field_env(name: str, field_path: str) -> Obj:
    """An env var from the downward API."""
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def headless_service(name: str, selector: dict[str, str], port: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"clusterIP": "None", "selector": selector, "ports": [{"port": port}]},
    }


def statefulset(name: str, pod_spec: Obj, replicas: int, labels: dict[str, str]) -> Obj:
    """A Parallel StatefulSet governed by the headless service of the same name."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {**pod_spec, "restartPolicy": "Always"}},
        },
    }


def spread_over_nodes(labels: dict[str, str]) -> Obj:
    """Pod affinity that puts pods with `labels` on different nodes."""
    term = {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


def read_text(path: Path) -> str:
    """A log file's text, empty while the container has not written it yet."""
    return path.read_text() if path.exists() else ""
