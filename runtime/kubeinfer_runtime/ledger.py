"""The ledger: what is durably done, kept beside the outputs so any attempt on any machine can resume.

Layout under the output prefix (everything bookkeeping starts with `_`):

    items/<id>.<ext>                  the item's output; its key depends on the job and the item only
    _ledger/job.json                  the fingerprint of model + task + inputs that owns this prefix
    _ledger/commits/<writer>.jsonl    a commit record: one line per item it commits (the manifest line)
                                      or records as failed ({"id", "index", "error", ...}); written AFTER
                                      every object it names
    _ledger/runs/<run>/done/<rank>    a rank's "I am done" marker for one run
    _ledger/runs/<run>/counts/<rank>  a rank's running counts (progress without listing the ledger)
    _ledger/plans/<run>               rank 0's "work planned" marker: every rank must see it (shared storage)
    manifest.jsonl, _SUCCESS          written by rank 0 at the end of a job that met its successPolicy
    _FAILED                           instead of _SUCCESS when too many items failed (ids and first error)

A record is written whole (no appends, which S3 lacks), once a rank has a few hundred items or a few
seconds of them, so bookkeeping costs O(items / record size) requests: a crash before a record leaves
its items uncommitted, the retry overwrites the same keys, and the manifest lists every item once
(the first record naming an item wins). Ledgers of earlier versions (`_ledger/items/<id>.json`,
`_ledger/failed/<id>.json`: one object per item) are still read, so their jobs resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from kubeinfer_api.jobconfig import JobConfig
from kubeinfer_api.validation import output_format
from kubeinfer_runtime.manifest import HEAD_BYTES, Source, Tally, first_index, manifest_lines
from kubeinfer_runtime.storage import ObjectStore

if TYPE_CHECKING:  # the CLI reads ledgers without importing torch
    from kubeinfer_runtime.strategies.base import Item

LEDGER = "_ledger"
COMMITS, RUNS, PLANS = f"{LEDGER}/commits", f"{LEDGER}/runs", f"{LEDGER}/plans"
LEGACY_ITEMS, LEGACY_FAILED = f"{LEDGER}/items", f"{LEDGER}/failed"  # one object per item (before 0.3)
JOB_RECORD = f"{LEDGER}/job.json"
MANIFEST, SUCCESS, UNSUCCESSFUL = "manifest.jsonl", "_SUCCESS", "_FAILED"
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "jsonl": "jsonl"}


class FingerprintMismatch(RuntimeError):
    """The output prefix already belongs to a job with a different model, task or inputs."""


@dataclass(frozen=True, slots=True)
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


ENTRY_FIELDS = tuple(f.name for f in fields(Entry))


def entry_line(entry: Entry) -> bytes:
    """The manifest line of an entry (`dataclasses.asdict` deep-copies: 5x slower at a million entries)."""
    return json.dumps({name: getattr(entry, name) for name in ENTRY_FIELDS}, sort_keys=True).encode() + b"\n"


def item_key(item_id: str, fmt: str) -> str:
    """Deterministic: a retry by any rank in any attempt overwrites instead of duplicating."""
    return f"items/{item_id}.{EXTENSIONS[fmt]}"


def digest_line(item: Item) -> bytes:
    """An item as the fingerprint sees it (unchanged since the first ledgers, so they still resume)."""
    return json.dumps([item.index, item.id, item.prompt, item.seed, item.parameters], sort_keys=True).encode() + b"\n"


def inputs_digest(items: Sequence[Item]) -> str:
    """sha256 over every item; a JSONL file's items carry it from the pass that checked them."""
    known = getattr(items, "digest", None)
    if isinstance(known, str):
        return known
    digest = hashlib.sha256()
    for item in items:
        digest.update(digest_line(item))
    return digest.hexdigest()


def fingerprint(job: JobConfig, items: Sequence[Item]) -> dict[str, Any]:
    """What determines the outputs: model, task, format, batching and every item (not workers or output)."""
    spec = job.spec
    detail = {
        "model": spec.model.model_dump(mode="json", by_alias=True, exclude={"credentials_secret", "cache"}),
        "task": spec.task.model_dump(mode="json", by_alias=True),
        "format": output_format(spec),
        "batchSize": spec.strategy.batch_size,
        "items": len(items),
        "inputs": inputs_digest(items),
    }
    detail["fingerprint"] = hashlib.sha256(json.dumps(detail, sort_keys=True).encode()).hexdigest()[:32]
    return detail


@dataclass
class LedgerState:
    """What the ledger holds: the committed entries by id, and the last failure of each uncommitted item."""

    entries: dict[str, Entry]
    failures: dict[str, dict[str, Any]]

    def failed(self) -> set[str]:
        return set(self.failures) - set(self.entries)

    def sorted_entries(self) -> list[Entry]:
        return sorted(self.entries.values(), key=lambda e: e.index)


def record_lines(entries: list[Entry], failures: list[dict[str, Any]]) -> bytes:
    """A commit record: entries (manifest lines) and failures, in item order."""
    rows = [(e.index, entry_line(e)) for e in entries]
    rows += [(int(f["index"]), json.dumps(f, sort_keys=True).encode() + b"\n") for f in failures]
    rows.sort(key=lambda r: r[0])
    return b"".join(line for _, line in rows)


class Ledger:
    def __init__(self, store: ObjectStore, threads: int = 16) -> None:
        self.store, self.threads = store, threads

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

    def write_record(self, writer: str, entries: list[Entry], failures: list[dict[str, Any]]) -> None:
        """Commit `entries` (their objects are already durable) and record `failures`, in one object."""
        self.store.put(f"{COMMITS}/{writer}.jsonl", record_lines(entries, failures))

    def state(self, exclude_prefix: str = "") -> LedgerState:
        """Every record (but those named `exclude_prefix...`), read in parallel: O(records) requests, plus
        the per-item objects of an old ledger."""
        state = LedgerState(entries={}, failures={})
        names = sorted(n for n in self.store.list(COMMITS) if not (exclude_prefix and n.startswith(exclude_prefix)))
        for data in self._read_all([f"{COMMITS}/{n}" for n in names]):
            for line in data.splitlines():
                row = json.loads(line)
                if "error" in row:
                    state.failures[str(row["id"])] = row
                else:
                    state.entries.setdefault(str(row["id"]), Entry(**row))
        for data in self._read_legacy(LEGACY_ITEMS):
            row = json.loads(data)
            state.entries.setdefault(str(row["id"]), Entry(**row))
        for data in self._read_legacy(LEGACY_FAILED):
            row = json.loads(data)
            state.failures.setdefault(str(row["id"]), row)
        return state

    def _read_legacy(self, folder: str) -> Iterator[bytes]:
        return self._read_all([f"{folder}/{n}" for n in self.store.list(folder)])

    def _read_all(self, keys: list[str]) -> Iterator[bytes]:
        """The objects in order, read `threads` at a time and a few rounds ahead (not all held at once)."""
        if len(keys) < 2:
            yield from (self.store.get(k) for k in keys)
            return
        ahead = self.threads * 4
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for start in range(0, len(keys), ahead):
                yield from pool.map(self.store.get, keys[start:start + ahead])

    def committed(self) -> set[str]:
        return set(self.state().entries)

    def failed(self) -> set[str]:
        """Items whose last attempt failed and that no later attempt committed."""
        return self.state().failed()

    def entries(self) -> list[Entry]:
        """Every committed entry, sorted by item index."""
        return self.state().sorted_entries()

    def mark_planned(self, run_id: str) -> None:
        self.store.put(f"{PLANS}/{run_id}", b"planned")

    def planned(self, run_id: str) -> bool:
        return self.store.exists(f"{PLANS}/{run_id}")

    def mark_done(self, run_id: str, rank: int) -> None:
        self.store.put(f"{RUNS}/{run_id}/done/{rank}", b"done")

    def done_ranks(self, run_id: str) -> int:
        return len(self.store.list(f"{RUNS}/{run_id}/done"))

    def write_counts(self, run_id: str, rank: int | str, succeeded: int, failed: int) -> None:
        """This rank's items committed and failed in this run (the progress reporter adds them up)."""
        body = json.dumps({"succeeded": succeeded, "failed": failed}).encode()
        self.store.put(f"{RUNS}/{run_id}/counts/{rank}", body)

    def counts(self, run_id: str, world_size: int) -> tuple[int, int]:
        """(succeeded, failed) in this run over all ranks: one small read per rank, whatever the item count."""
        return self._sum_counts([f"{RUNS}/{run_id}/counts/{r}" for r in range(world_size)])

    def counts_of_all(self, run_id: str) -> tuple[int, int]:
        """(succeeded, failed) over every writer that published counts in `run_id` (elastic workers come
        and go, so they are listed rather than numbered)."""
        folder = f"{RUNS}/{run_id}/counts"
        return self._sum_counts([f"{folder}/{name}" for name in self.store.list(folder)])

    def _sum_counts(self, keys: list[str]) -> tuple[int, int]:
        succeeded = failed = 0
        for data in self._read_all_present(keys):
            row = json.loads(data)
            succeeded, failed = succeeded + int(row["succeeded"]), failed + int(row["failed"])
        return succeeded, failed

    def _read_all_present(self, keys: list[str]) -> list[bytes]:
        def read(key: str) -> bytes | None:
            try:
                return self.store.get(key)
            except FileNotFoundError:
                return None

        with ThreadPoolExecutor(max_workers=min(self.threads, max(len(keys), 1))) as pool:
            return [d for d in pool.map(read, keys) if d is not None]

    def write_manifest(self, total: int) -> Tally:
        """One line per committed item, in index order, merged from the records as it is uploaded:
        O(records) requests and memory for the records that overlap, whatever the item count."""
        sources = self.sources()
        tally = Tally(total)

        def lines() -> Iterator[bytes]:
            nonlocal tally
            tally = Tally(total)  # a retried upload counts again
            return manifest_lines(self.store, sources, tally)

        self.store.put_stream(MANIFEST, lines)
        return tally

    def manifest_head(self, count: int) -> list[Entry]:
        """The first `count` entries of manifest.jsonl, read a piece at a time (not the whole file)."""
        data, start = b"", 0
        while data.count(b"\n") < count:
            piece = self.store.get_range(MANIFEST, start, start + HEAD_BYTES)
            data, start = data + piece, start + len(piece)
            if len(piece) < HEAD_BYTES:
                break
        return [Entry(**json.loads(line)) for line in data.split(b"\n")[:count] if line.strip()]

    def sources(self) -> list[Source]:
        """Every record with its first index (a ranged read of its head), and an old ledger's objects."""
        names = sorted(self.store.list(COMMITS))
        keys = [f"{COMMITS}/{n}" for n in names]

        def head(key: str) -> bytes:
            data = self.store.get_range(key, 0, HEAD_BYTES)
            return data if b"\n" in data or len(data) < HEAD_BYTES else self.store.get(key)

        found: list[Source] = []
        with ThreadPoolExecutor(max_workers=min(self.threads, max(len(keys), 1))) as pool:
            for order, (key, data) in enumerate(zip(keys, pool.map(head, keys), strict=True)):
                if data.strip():
                    found.append(Source(order=order, key=key, first=first_index(data)))
        legacy = [Entry(**json.loads(d)) for d in self._read_legacy(LEGACY_ITEMS)]
        failed = [json.loads(d) for d in self._read_legacy(LEGACY_FAILED)]
        if legacy:  # after every record: a record's entry wins
            found.append(Source(order=len(keys), data=record_lines(legacy, []), first=min(e.index for e in legacy)))
        if failed:  # before every record: a record's failure is the later one
            found.append(Source(order=-1, data=record_lines([], failed), first=min(int(f["index"]) for f in failed)))
        return found

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
