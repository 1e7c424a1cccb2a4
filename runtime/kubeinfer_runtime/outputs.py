"""Committing results: encode and upload each item in background threads while compute goes on.

The compute loop hands a Result to `Committer.submit` and returns to the GPU at once; a bounded number
of results wait for the network (so memory stays bounded). Uploaded items gather in a commit record
that is written when it holds `record_items` items or is `record_seconds` old (and at the end), so the
ledger costs a few requests per thousand fast items and loses at most a few seconds of slow ones. An
upload that still fails after the store's retries stops the run (exit non-zero, the next attempt
resumes), while an item whose *compute* failed is recorded as failed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubeinfer_runtime import metrics
from kubeinfer_runtime.ledger import Entry, Ledger, item_key
from kubeinfer_runtime.storage import ObjectStore
from kubeinfer_runtime.strategies.base import Result

log = logging.getLogger(__name__)
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
#: Operators' knobs: items per commit record, and the most seconds an uploaded item waits for its record.
RECORD_ITEMS_ENV, RECORD_SECONDS_ENV = "KUBEINFER_COMMIT_RECORD_ITEMS", "KUBEINFER_COMMIT_RECORD_SECONDS"


def record_limits() -> dict[str, Any]:
    """Committer arguments from the environment (defaults: 1024 items, 5 s)."""
    return {"record_items": int(os.environ.get(RECORD_ITEMS_ENV) or 1024),
            "record_seconds": float(os.environ.get(RECORD_SECONDS_ENV) or 5.0)}


def encode(result: Result, fmt: str) -> bytes:
    """The bytes of one output; deterministic for a given image or text (no timestamps)."""
    output = result.output
    if fmt == "jsonl":
        if not isinstance(output, str):
            raise TypeError(f"output.format jsonl needs text, got {type(output).__name__}")
        line = {"id": result.item.id, "index": result.item.index, "prompt": result.item.prompt, "text": output}
        return (json.dumps(line, ensure_ascii=False) + "\n").encode()
    if not hasattr(output, "save"):
        raise TypeError(f"output.format {fmt} needs images, got {type(output).__name__}")
    buffer = io.BytesIO()
    options: dict[str, Any] = {"quality": 95} if fmt in ("jpeg", "webp") else {}
    output.save(buffer, format=PIL_FORMATS[fmt], **options)
    return buffer.getvalue()


@dataclass
class CommitStats:
    succeeded: int = 0
    failed: int = 0
    bytes: int = 0


class Committer:
    def __init__(self, store: ObjectStore, ledger: Ledger, fmt: str, rank: int, attempt: int,
                 threads: int = 4, max_pending: int = 8, writer: str | None = None, run_id: str = "",
                 record_items: int = 1024, record_seconds: float = 5.0, skip: frozenset[str] = frozenset()) -> None:
        self.store, self.ledger, self.fmt = store, ledger, fmt
        self.rank, self.attempt, self.run_id = rank, attempt, run_id
        self.writer = writer or f"a{attempt:03d}-{run_id or 'run'}-r{rank:05d}"
        self.record_items, self.record_seconds, self.skip = record_items, record_seconds, skip
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="commit")
        self.slots = threading.BoundedSemaphore(max_pending)
        self.stats = CommitStats()
        self.lock = threading.Lock()  # the pending record and the stats
        self.record_lock = threading.Lock()  # one record write at a time, numbered in order
        self.entries: list[Entry] = []
        self.failures: list[dict[str, Any]] = []
        self.oldest = 0.0  # monotonic time of the oldest item not yet in a record
        self.records = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.flusher = threading.Thread(target=self._flush_when_old, name="commit-record", daemon=True)
        self.flusher.start()

    def submit(self, result: Result) -> None:
        """Queue one result; blocks only when `max_pending` results are already waiting."""
        self._raise_error()
        if result.item.id in self.skip:  # committed before, recomputed only as a batch-mate
            return
        self.slots.acquire()
        future: Future[None] = self.pool.submit(self._commit, result)
        future.add_done_callback(self._done)

    def close(self) -> CommitStats:
        """Wait for every queued result, write the last record; raise the first upload error."""
        self.pool.shutdown(wait=True)
        self.stop.set()
        self.flusher.join()
        self._raise_error()
        self.flush()
        return self.stats

    def flush(self) -> None:
        """Write the items uploaded so far as one record (after their objects), then this rank's counts."""
        with self.record_lock:
            with self.lock:
                entries, failures = self.entries, self.failures
                self.entries, self.failures = [], []
            if not entries and not failures:
                return
            self.ledger.write_record(f"{self.writer}-{self.records:06d}", entries, failures)
            self.records += 1
            with self.lock:
                self.stats.succeeded += len(entries)
                self.stats.failed += len(failures)
                self.stats.bytes += sum(e.bytes for e in entries)
                succeeded, failed = self.stats.succeeded, self.stats.failed
            if self.run_id:
                self.ledger.write_counts(self.run_id, self.rank, succeeded, failed)
        metrics.ITEMS.labels(result="succeeded").inc(len(entries))
        metrics.ITEMS.labels(result="failed").inc(len(failures))

    def _flush_when_old(self) -> None:
        while not self.stop.wait(max(0.05, min(1.0, self.record_seconds))):
            with self.lock:
                due = bool(self.entries or self.failures) and time.monotonic() - self.oldest >= self.record_seconds
            if due:
                self._flush_or_fail()

    def _flush_or_fail(self) -> None:
        try:
            self.flush()
        except BaseException as err:  # the next submit or close raises it
            with self.lock:
                self.error = self.error or err

    def _done(self, future: Future[None]) -> None:
        self.slots.release()
        err = future.exception()
        if err is not None:
            with self.lock:
                self.error = self.error or err

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _add(self, entry: Entry | None = None, failure: dict[str, Any] | None = None) -> None:
        with self.lock:
            if not self.entries and not self.failures:
                self.oldest = time.monotonic()
            if entry is not None:
                self.entries.append(entry)
            if failure is not None:
                self.failures.append(failure)
            full = (len(self.entries) + len(self.failures) >= self.record_items
                    or time.monotonic() - self.oldest >= self.record_seconds)
        if full:
            self.flush()

    def _commit(self, result: Result) -> None:
        if self.error is not None:  # stop writing once the store has failed
            return
        if result.error is not None:
            self._fail(result, result.error)
            return
        try:
            data = encode(result, self.fmt)
        except (TypeError, ValueError, OSError) as err:
            self._fail(result, f"{type(err).__name__}: {err}")
            return
        self._add(entry=upload(self.store, result, self.fmt, data, self.rank, self.attempt))

    def _fail(self, result: Result, error: str) -> None:
        self._add(failure=failure_row(result, error, self.rank, self.attempt))


def upload(store: ObjectStore, result: Result, fmt: str, data: bytes, rank: int, attempt: int) -> Entry:
    """Write one item's object at its deterministic key; the Entry that a record may then commit."""
    started = time.perf_counter()
    key = item_key(result.item.id, fmt)
    store.put(key, data)
    metrics.UPLOAD_SECONDS.observe(time.perf_counter() - started)
    metrics.UPLOAD_BYTES.inc(len(data))
    metrics.ITEM_SECONDS.observe(result.seconds)
    return Entry(id=result.item.id, index=result.item.index, key=key, bytes=len(data),
                 sha256=hashlib.sha256(data).hexdigest(), seed=result.item.seed, rank=rank, attempt=attempt,
                 seconds=round(result.seconds, 4), prompt=result.item.prompt, committed_at=round(time.time(), 3))


def failure_row(result: Result, error: str, rank: int, attempt: int) -> dict[str, Any]:
    log.error("item %s (index %d) failed: %s", result.item.id, result.item.index, error)
    return {"id": result.item.id, "index": result.item.index, "error": error, "rank": rank, "attempt": attempt}
