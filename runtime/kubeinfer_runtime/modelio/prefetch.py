"""The pod's launcher fetches the model while its ranks start, and serves it to the job's other pods.

Started at container start, the fetch overlaps image start-up, torch imports and the rendezvous; the
ranks' own `fetch_model` then takes the same cache-entry lock and finds the model complete. The
peer server lives as long as the launcher (the pod), so pods that join later (elastic data) can
still read from it. The launcher leaves what it read in a small JSON file (`PREFETCH_RECORD_ENV`)
that local rank 0 adds to its start-up record; a failed prefetch only logs: the ranks then fetch
themselves and report the error with the field to fix.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kubeinfer_api.jobconfig import JobConfig
from kubeinfer_api.naming import MODEL_PEER_PORT, worker_addr
from kubeinfer_runtime.modelio.peers import Offers, PeerServer, parent
from kubeinfer_runtime.modelio.remote import FanOut, Fetched, fetch_remote

log = logging.getLogger(__name__)
PREFETCH_RECORD_ENV = "KUBEINFER_MODEL_PREFETCH_RECORD"
REMOTE_SCHEMES = ("s3", "gs", "az", "abfs")


def start(job: JobConfig, pod_index: int, root: Path, durable: bool) -> threading.Thread | None:
    """Begin fetching (and serving) in daemon threads; None when the model is not remote."""
    if urlsplit(job.spec.model.uri).scheme not in REMOTE_SCHEMES:
        return None
    fanout = FanOut()
    if job.spec.workers.nodes > 1:
        fanout.offers = Offers()
        try:
            PeerServer(fanout.offers, MODEL_PEER_PORT).start()
        except OSError as err:  # the children fall back to storage
            log.warning("model: cannot serve peers on port %d: %s", MODEL_PEER_PORT, err)
            fanout.offers = None
        up = parent(pod_index)
        if up is not None:
            fanout.parent_host = worker_addr(job.name, job.namespace, up)
    record = Path(tempfile.mkdtemp(prefix="kubeinfer-prefetch-")) / "fetched.json"
    os.environ[PREFETCH_RECORD_ENV] = str(record)  # the ranks torchrun starts inherit it
    thread = threading.Thread(target=_run, args=(job.spec.model.uri, root, durable, fanout, record),
                              name="model-prefetch", daemon=True)
    thread.start()
    return thread


def _run(uri: str, root: Path, durable: bool, fanout: FanOut, record: Path) -> None:
    try:
        fetched = fetch_remote(uri, root, durable, fanout, on_fetched=lambda f: write_record(record, f))
        if not record.exists():  # found complete in the cache: nothing was fetched
            write_record(record, fetched)
    except Exception as err:
        log.warning("model: prefetch failed (%s: %s); the ranks will fetch it themselves", type(err).__name__, err)


def write_record(path: Path, fetched: Fetched) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"bytes": fetched.bytes_by_source, "modelBytes": fetched.model_bytes,
                               "seconds": round(fetched.seconds, 3)}))
    os.replace(tmp, path)


@dataclass(frozen=True)
class PrefetchRecord:
    bytes: dict[str, int]
    model_bytes: int
    seconds: float


def active() -> bool:
    """True in the ranks of a pod whose launcher fetches the model for them."""
    return bool(os.environ.get(PREFETCH_RECORD_ENV))


def read_record() -> PrefetchRecord | None:
    """What this pod's launcher read (None when it did not fetch, or failed)."""
    try:
        raw = json.loads(Path(os.environ.get(PREFETCH_RECORD_ENV, "")).read_text())
        return PrefetchRecord({str(k): int(v) for k, v in raw["bytes"].items()}, int(raw["modelBytes"]),
                              float(raw["seconds"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
