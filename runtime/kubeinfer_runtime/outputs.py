"""Committing results: encode, upload and record each item in background threads while compute goes on.

The compute loop hands a Result to `Committer.submit` and returns to the GPU at once; a bounded number
of results wait for the network (so memory stays bounded). Each item's object is written before its
ledger entry; an upload that still fails after the store's retries stops the run (exit non-zero, the
next attempt resumes), while an item whose *compute* failed is recorded as failed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
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
                 threads: int = 4, max_pending: int = 8) -> None:
        self.store, self.ledger, self.fmt = store, ledger, fmt
        self.rank, self.attempt = rank, attempt
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="commit")
        self.slots = threading.BoundedSemaphore(max_pending)
        self.stats = CommitStats()
        self.lock = threading.Lock()
        self.error: BaseException | None = None

    def submit(self, result: Result) -> None:
        """Queue one result; blocks only when `max_pending` results are already waiting."""
        self._raise_error()
        self.slots.acquire()
        future: Future[None] = self.pool.submit(self._commit, result)
        future.add_done_callback(self._done)

    def close(self) -> CommitStats:
        """Wait for every queued result; raise the first upload error."""
        self.pool.shutdown(wait=True)
        self._raise_error()
        return self.stats

    def _done(self, future: Future[None]) -> None:
        self.slots.release()
        err = future.exception()
        if err is not None:
            with self.lock:
                self.error = self.error or err

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

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
        started = time.perf_counter()
        key = item_key(result.item.id, self.fmt)
        self.store.put(key, data)
        entry = Entry(id=result.item.id, index=result.item.index, key=key, bytes=len(data),
                      sha256=hashlib.sha256(data).hexdigest(), seed=result.item.seed, rank=self.rank,
                      attempt=self.attempt, seconds=round(result.seconds, 4), prompt=result.item.prompt,
                      committed_at=round(time.time(), 3))
        self.ledger.commit(entry)
        metrics.UPLOAD_SECONDS.observe(time.perf_counter() - started)
        metrics.UPLOAD_BYTES.inc(len(data))
        metrics.ITEM_SECONDS.observe(result.seconds)
        metrics.ITEMS.labels(result="succeeded").inc()
        with self.lock:
            self.stats.succeeded += 1
            self.stats.bytes += len(data)

    def _fail(self, result: Result, error: str) -> None:
        log.error("item %s (index %d) failed: %s", result.item.id, result.item.index, error)
        self.ledger.fail(result.item, error, self.rank, self.attempt)
        metrics.ITEMS.labels(result="failed").inc()
        with self.lock:
            self.stats.failed += 1
