"""The ledger: what is durably done, kept beside the outputs so any attempt on any machine can resume.

Layout under the output prefix (everything bookkeeping starts with `_`):

    items/<id>.<ext>              the item's output; its key depends on the job and the item only
    _ledger/job.json              the fingerprint of model + task + inputs that owns this prefix
    _ledger/items/<id>.json       one entry per committed item, written AFTER its object
    _ledger/failed/<id>.json      the last failure of an item not yet committed (retried next attempt)
    _ledger/runs/<run>/<rank>     a rank's "I am done" marker for one run
    _ledger/plans/<run>           rank 0's "work planned" marker: every rank must see it (shared storage)
    manifest.jsonl, _SUCCESS      written by rank 0 at the end of a job that met its successPolicy
    _FAILED                       instead of _SUCCESS when too many items failed (ids and first error)

One small object per entry (no appends, which S3 lacks) makes a commit atomic and listing the
folder the whole truth: a crash between an object and its entry leaves the item uncommitted, and
the retry overwrites the same key, so nothing is duplicated and nothing is lost.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kubeinfer_api.jobconfig import JobConfig
from kubeinfer_api.validation import output_format
from kubeinfer_runtime.storage import ObjectStore

if TYPE_CHECKING:  # the CLI reads ledgers without importing torch
    from kubeinfer_runtime.strategies.base import Item

LEDGER = "_ledger"
ITEMS, FAILED, RUNS, PLANS = f"{LEDGER}/items", f"{LEDGER}/failed", f"{LEDGER}/runs", f"{LEDGER}/plans"
JOB_RECORD = f"{LEDGER}/job.json"
MANIFEST, SUCCESS, UNSUCCESSFUL = "manifest.jsonl", "_SUCCESS", "_FAILED"
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "jsonl": "jsonl"}


class FingerprintMismatch(RuntimeError):
    """The output prefix already belongs to a job with a different model, task or inputs."""


@dataclass(frozen=True)
class Entry:
    """A committed item, as it appears in the ledger and in manifest.jsonl (`key` relative to the output)."""

    id: str
    index: int
    key: str
    bytes: int
    sha256: str
    seed: int
    rank: int
    attempt: int
    seconds: float
    prompt: str = ""
    committed_at: float = 0.0  # unix time the entry was written (the object is already durable)


def item_key(item_id: str, fmt: str) -> str:
    """Deterministic: a retry by any rank in any attempt overwrites instead of duplicating."""
    return f"items/{item_id}.{EXTENSIONS[fmt]}"


def fingerprint(job: JobConfig, items: list[Item]) -> dict[str, Any]:
    """What determines the outputs: model, task, format, batching and every item (not workers or output)."""
    spec = job.spec
    digest = hashlib.sha256()
    for item in items:
        line = [item.index, item.id, item.prompt, item.seed, item.parameters]
        digest.update(json.dumps(line, sort_keys=True).encode() + b"\n")
    detail = {
        "model": spec.model.model_dump(mode="json", by_alias=True, exclude={"credentials_secret", "cache"}),
        "task": spec.task.model_dump(mode="json", by_alias=True),
        "format": output_format(spec),
        "batchSize": spec.strategy.batch_size,
        "items": len(items),
        "inputs": digest.hexdigest(),
    }
    detail["fingerprint"] = hashlib.sha256(json.dumps(detail, sort_keys=True).encode()).hexdigest()[:32]
    return detail


class Ledger:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def claim(self, job: JobConfig, detail: dict[str, Any]) -> None:
        """Record which job owns the prefix, or refuse when another job's outputs are there."""
        if self.store.exists(JOB_RECORD):
            self.check(detail)
            return
        record = {**detail, "job": job.name, "namespace": job.namespace, "uid": job.uid}
        self.store.put(JOB_RECORD, json.dumps(record, indent=1, sort_keys=True).encode())

    def check(self, detail: dict[str, Any]) -> None:
        owner = json.loads(self.store.get(JOB_RECORD))
        if owner.get("fingerprint") == detail["fingerprint"]:
            return
        changed = sorted(k for k in ("model", "task", "format", "batchSize", "inputs")
                         if owner.get(k) != detail.get(k))
        raise FingerprintMismatch(
            f"spec.output.uri: {self.store.url()} already holds outputs of job {owner.get('job')!r} "
            f"(different {', '.join(changed) or 'spec'}); its items would mix with this job's. "
            "Use a new output.uri, or delete that prefix to start over")

    def committed(self) -> set[str]:
        return {name.removesuffix(".json") for name in self.store.list(ITEMS)}

    def failed(self) -> set[str]:
        """Items whose last attempt failed and that no later attempt committed."""
        return {name.removesuffix(".json") for name in self.store.list(FAILED)} - self.committed()

    def commit(self, entry: Entry) -> None:
        self.store.put(f"{ITEMS}/{entry.id}.json", json.dumps(asdict(entry), sort_keys=True).encode())

    def fail(self, item: Item, error: str, rank: int, attempt: int) -> None:
        record = {"id": item.id, "index": item.index, "error": error, "rank": rank, "attempt": attempt}
        self.store.put(f"{FAILED}/{item.id}.json", json.dumps(record, sort_keys=True).encode())

    def failure(self, item_id: str) -> dict[str, Any]:
        return dict(json.loads(self.store.get(f"{FAILED}/{item_id}.json")))

    def entries(self, threads: int = 16) -> list[Entry]:
        """Every committed entry, sorted by item index (read in parallel: one small object each)."""
        names = self.store.list(ITEMS)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            raw = list(pool.map(lambda n: json.loads(self.store.get(f"{ITEMS}/{n}")), names))
        return sorted((Entry(**r) for r in raw), key=lambda e: e.index)

    def mark_planned(self, run_id: str) -> None:
        self.store.put(f"{PLANS}/{run_id}", b"planned")

    def planned(self, run_id: str) -> bool:
        return self.store.exists(f"{PLANS}/{run_id}")

    def mark_done(self, run_id: str, rank: int) -> None:
        self.store.put(f"{RUNS}/{run_id}/{rank}", b"done")

    def done_ranks(self, run_id: str) -> int:
        return len(self.store.list(f"{RUNS}/{run_id}"))

    def write_manifest(self, entries: list[Entry]) -> None:
        lines = "".join(json.dumps(asdict(e), sort_keys=True) + "\n" for e in entries)
        self.store.put(MANIFEST, lines.encode())

    def write_success(self, summary: dict[str, Any]) -> None:
        self.store.put(SUCCESS, json.dumps(summary, indent=1, sort_keys=True).encode())

    def write_unsuccessful(self, summary: dict[str, Any]) -> None:
        self.store.put(UNSUCCESSFUL, json.dumps(summary, indent=1, sort_keys=True).encode())

    def success(self) -> dict[str, Any] | None:
        """The `_SUCCESS` summary, or None while the job is not complete."""
        return self._summary(SUCCESS)

    def unsuccessful(self) -> dict[str, Any] | None:
        """The `_FAILED` summary of a run that ended with too many failed items, or None."""
        return self._summary(UNSUCCESSFUL)

    def _summary(self, key: str) -> dict[str, Any] | None:
        if not self.store.exists(key):
            return None
        return dict(json.loads(self.store.get(key)))
