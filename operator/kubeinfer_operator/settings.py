"""Operator settings from the environment (the Helm chart sets them); one place, read once at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

FINALIZER = "kubeinfer.io/finalizer"
PROGRESS_PREFIX = "kubeinfer.io"
DEFAULT_WORKER_IMAGE = "ghcr.io/kubeinfer/kubeinfer-runtime:0.1.0"


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected an integer (seconds or a port)") from None


def _labels(env: dict[str, str], name: str) -> dict[str, str]:
    pairs = [p.strip() for p in env.get(name, "").split(",") if p.strip()]
    bad = [p for p in pairs if "=" not in p or not p.split("=", 1)[0].strip()]
    if bad:
        raise ValueError(f"{name}: expected key=value pairs separated by commas, got {bad}")
    return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}


@dataclass(frozen=True)
class Settings:
    worker_image: str = DEFAULT_WORKER_IMAGE
    metrics_port: int = 9090
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    resync_seconds: int = 30
    finished_resync_seconds: int = 300
    wakeup_settle_seconds: float = 1.0
    reconcile_threads: int = 16
    log_level: str = "INFO"
    #: Labels of the namespaces that may scrape worker metrics through a job's NetworkPolicy; empty: any.
    metrics_scrapers: dict[str, str] = field(default_factory=dict)
    kueue: bool = False  # manage Kueue Workloads for jobs labelled kueue.x-k8s.io/queue-name

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """KUBEINFER_WORKER_IMAGE, KUBEINFER_METRICS_PORT (0 = off), KUBEINFER_NAMESPACES (comma list),
        KUBEINFER_RESYNC_SECONDS, KUBEINFER_WAKEUP_SETTLE_MS, KUBEINFER_RECONCILE_THREADS,
        KUBEINFER_LOG_LEVEL, KUBEINFER_METRICS_SCRAPERS (namespace labels, `k=v,k2=v2`),
        KUBEINFER_KUEUE_ENABLED (true: the Kueue integration; the chart's kueue.enabled)."""
        env = dict(os.environ if env is None else env)
        namespaces = tuple(n.strip() for n in env.get("KUBEINFER_NAMESPACES", "").split(",") if n.strip())
        return cls(
            worker_image=env.get("KUBEINFER_WORKER_IMAGE") or DEFAULT_WORKER_IMAGE,
            metrics_port=_int(env, "KUBEINFER_METRICS_PORT", 9090),
            namespaces=namespaces,
            resync_seconds=max(1, _int(env, "KUBEINFER_RESYNC_SECONDS", 30)),
            finished_resync_seconds=max(1, _int(env, "KUBEINFER_FINISHED_RESYNC_SECONDS", 300)),
            wakeup_settle_seconds=max(0, _int(env, "KUBEINFER_WAKEUP_SETTLE_MS", 1000)) / 1000,
            reconcile_threads=max(1, _int(env, "KUBEINFER_RECONCILE_THREADS", 16)),
            log_level=(env.get("KUBEINFER_LOG_LEVEL") or "INFO").upper(),
            metrics_scrapers=_labels(env, "KUBEINFER_METRICS_SCRAPERS"),
            kueue=env.get("KUBEINFER_KUEUE_ENABLED", "").strip().lower() in ("1", "true", "yes"),
        )
