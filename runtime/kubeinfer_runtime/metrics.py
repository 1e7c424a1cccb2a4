"""Prometheus metrics: one /metrics endpoint per pod, summed over its torchrun processes.

The launcher (`kubeinfer-worker`) points PROMETHEUS_MULTIPROC_DIR at a fresh folder *before* torchrun
starts the ranks, so each rank's counters land in files that the launcher's endpoint aggregates.
Labels stay bounded (no item ids or prompts).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)
DEFAULT_PORT = 9400
PORT_ENV = "KUBEINFER_WORKER_METRICS_PORT"
_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

ITEMS = Counter("kubeinfer_items", "Items finished by this pod's processes", ["result"])
ITEM_SECONDS = Histogram("kubeinfer_item_seconds", "Compute time per item", buckets=_SECONDS)
UPLOAD_SECONDS = Histogram("kubeinfer_upload_seconds", "Time to write one output and its ledger entry",
                           buckets=_SECONDS)
UPLOAD_BYTES = Counter("kubeinfer_upload_bytes", "Output bytes written")


def prepare_multiprocess_dir() -> Path:
    """A clean folder for the ranks' metric files, exported for the processes torchrun starts."""
    path = Path(tempfile.mkdtemp(prefix="kubeinfer-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def serve(port: int) -> None:
    """Serve the ranks' aggregated metrics on `port` (0: off); a busy port is logged, not fatal."""
    if port <= 0:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(port, registry=registry)
    except OSError as err:
        log.warning("metrics: cannot listen on port %d (%s); continuing without /metrics", port, err)
        return
    log.info("metrics: serving /metrics on port %d", port)


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def port_from_env(default: int) -> int:
    raw = os.environ.get(PORT_ENV, "")
    return int(raw) if raw.strip().isdigit() else default
