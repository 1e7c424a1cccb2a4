"""Elastic data parallel: each process claims chunks of the items and needs no other process.

The items are cut into chunks of whole batch windows (`[c*K, (c+1)*K)`, K a multiple of batchSize), the
same for every worker of an epoch. A worker walks the chunks in order and computes each one it claims
(`claims.Claims`); a chunk's results wait in memory until the worker wins the chunk's publish claim,
then its objects are written and one commit record `_ledger/commits/e<epoch>-c<chunk>.jsonl` names them.
A worker that dies loses its claimed chunks only: when its lease runs out (or its pod's replacement
starts) another worker takes them over. At the tail, idle workers re-run the oldest chunks still in
flight (speculation); whichever copy wins the publish claim commits, the other is discarded unwritten.
The first worker to see every chunk committed wins the finalize claim and writes the manifest.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubeinfer_api.jobconfig import JobConfig
from kubeinfer_api.validation import output_format
from kubeinfer_runtime import drain, metrics
from kubeinfer_runtime.claims import Claim, Claims
from kubeinfer_runtime.ledger import COMMITS, Entry, Ledger
from kubeinfer_runtime.outputs import encode, failure_row, upload
from kubeinfer_runtime.storage import ObjectStore
from kubeinfer_runtime.strategies.base import Item, Result
from kubeinfer_runtime.windows import IndexView, plan_windows, window_view

log = logging.getLogger("kubeinfer")
#: Items per chunk (operators' knob); by default a few hundred texts or a few dozen images.
CHUNK_ENV = "KUBEINFER_CHUNK_ITEMS"
#: TEST ONLY: "<slot>:<seconds>" makes that worker slot hold each chunk it computed for up to that long
#: before publishing it, or until another worker has committed the chunk.
SLOW_ENV = "KUBEINFER_TEST_ONLY_SLOW_SLOT"
POLL_S = 0.5


def chunk_size(total: int, workers: int, batch: int, task_type: str) -> int:
    """Whole batch windows; small enough that every worker gets several chunks, so the tail stays short."""
    wanted = int(os.environ.get(CHUNK_ENV) or 0)
    if not wanted:
        cap = 256 if task_type == "text-generation" else 32
        wanted = min(cap, max(1, math.ceil(total / (4 * max(workers, 1)))))
    return max(batch, math.ceil(wanted / batch) * batch)


def epoch_of(config: JobConfig) -> str:
    """Claims are valid within one job (its UID) or one local `kubeinfer run` (torchrun's run id)."""
    if config.uid and config.uid != "local":  # `kubeinfer run` names every local job "local"
        return config.uid
    return os.environ.get("TORCHELASTIC_RUN_ID") or "local"


def worker_slot() -> int:
    """This process's stable place: a replaced pod's processes take the same slots."""
    node = int(os.environ.get("KUBEINFER_NODE_RANK") or os.environ.get("GROUP_RANK") or 0)
    local, per_node = int(os.environ.get("LOCAL_RANK") or 0), int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    return node * per_node + local


def record_key(epoch: str, chunk: int) -> str:
    return f"e{epoch}-c{chunk:08d}"


@dataclass
class ChunkPlan:
    """The epoch's chunks, which of them this worker found open, and the items committed before the epoch."""

    items: Sequence[Item]
    size: int
    open: list[int]
    skip: frozenset[str]

    def chunk(self, number: int) -> list[Item]:
        return list(self.items[number * self.size:(number + 1) * self.size])

    def view(self) -> IndexView:
        """The open chunks' items, made as they are reached."""
        return window_view(self.items, [(c, c + 1) for c in self.open], self.size)

    @property
    def to_do(self) -> int:
        return len(self.view()) - len(self.skip)


def plan_chunks(config: JobConfig, ledger: Ledger, items: Sequence[Item], epoch: str) -> ChunkPlan:
    """Chunks with an item no earlier epoch committed (failed items are retried, as in a gang restart)."""
    size = chunk_size(len(items), config.plan.world_size, config.spec.strategy.batch_size, config.spec.task.type)
    windows, skip = plan_windows(ledger.state(exclude_prefix=f"e{epoch}-").entries.values(), len(items), size)
    open_chunks = [c for first, end in windows for c in range(first, end)]
    return ChunkPlan(items=items, size=size, open=open_chunks, skip=skip)


class ElasticWorker:
    """Claims, computes and publishes chunks until every chunk of the plan is committed."""

    def __init__(self, config: JobConfig, store: ObjectStore, ledger: Ledger, claims: Claims, plan: ChunkPlan,
                 compute: Callable[[list[Item]], Iterable[Result]], attempt: int) -> None:
        self.config, self.store, self.ledger, self.claims, self.plan = config, store, ledger, claims, plan
        self.compute, self.attempt = compute, attempt
        self.epoch = epoch_of(config)
        self.fmt = output_format(config.spec)
        self.publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self.uploads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="upload")
        self.publishing: Future[None] | None = None
        self.mine: set[int] = set()  # chunks this incarnation has computed (published or discarded)
        self.lock = threading.Lock()
        self.succeeded = self.failed = 0
        self.slow = slow_seconds(claims.slot)

    def run(self) -> None:
        """Until every chunk is committed; on SIGTERM (drain) stop claiming, publish the chunk computed last
        and raise Drained: a chunk in computation is abandoned, and another worker takes its claim over."""
        for chunk in self.plan.open:  # the common path: one create per chunk, no listing
            if drain.requested():
                break
            claim = self.claims.take(f"c{chunk:08d}")
            if claim is not None:
                self._compute(chunk, claim)
        if not drain.requested():
            self._tail()
        self._wait_publish()
        self.publisher.shutdown()
        self.uploads.shutdown()
        if drain.requested():
            raise drain.stopped(self.succeeded)

    def committed_chunks(self) -> set[int]:
        prefix = f"e{self.epoch}-c"
        return {int(n[len(prefix):].split(".")[0]) for n in self.store.list(COMMITS) if n.startswith(prefix)}

    def _tail(self) -> None:
        """Take over chunks whose owner is gone, then speculate on the oldest ones still in flight."""
        while not drain.requested():
            self._raise_publish_error()
            remaining = [c for c in self.plan.open if c not in self.committed_chunks()]
            if not remaining:
                return
            if not self._take_one(remaining):
                time.sleep(POLL_S)

    def _take_one(self, remaining: list[int]) -> bool:
        for chunk in remaining:
            if chunk in self.mine:
                continue  # ours, being published
            name = f"c{chunk:08d}"
            latest = self.claims.latest(name)
            if latest is None or not self.claims.alive(latest):
                claim = self.claims.take(name, after=latest)
            elif latest.incarnation != self.claims.incarnation and not latest.speculative:
                claim = self.claims.take(name, after=latest, speculative=True)
            elif self._publisher_gone(chunk):  # the copy that won the publish claim died with its worker
                claim = self.claims.take(name, after=latest)
            else:
                continue
            if claim is not None:
                if claim.speculative and latest is not None:
                    log.info("chunk %d: slot %d is still on it; computing a speculative copy", chunk, latest.slot)
                elif latest is not None:
                    log.info("chunk %d: its owner (slot %d) is gone; taking it over", chunk, latest.slot)
                self._compute(chunk, claim)
                return True
        return False

    def _publisher_gone(self, chunk: int) -> bool:
        publisher = self.claims.latest(f"p{chunk:08d}")
        return publisher is not None and not self.claims.alive(publisher)

    def _compute(self, chunk: int, claim: Claim) -> None:
        items, results = self.plan.chunk(chunk), []
        for result in self.compute(items):
            results.append(result)
            if drain.requested() and len(results) < len(items):
                return  # draining: the chunk is abandoned unpublished
        self.mine.add(chunk)
        self._wait_publish()
        self.publishing = self.publisher.submit(self._publish, chunk, results)

    def _wait_publish(self) -> None:
        if self.publishing is not None:
            self.publishing.result()
            self.publishing = None

    def _raise_publish_error(self) -> None:
        if self.publishing is not None and self.publishing.done():
            self._wait_publish()

    def _publish(self, chunk: int, results: list[Result]) -> None:
        """Write the chunk's objects and its record, if this worker wins the chunk's publish claim."""
        try:
            key = f"{COMMITS}/{record_key(self.epoch, chunk)}.jsonl"
            self._hold(key)
            if self.claims.take_over(f"p{chunk:08d}") is None or self.store.exists(key):
                log.info("chunk %d: another worker commits it; discarding this copy", chunk)
                return
            self._write(chunk, results)
        finally:
            self.mine.discard(chunk)

    def _hold(self, key: str) -> None:
        """The test-only slow knob: sit on a computed chunk for up to its seconds, or until another worker
        commits the chunk (so a test of speculation waits for the speculation, not for the clock)."""
        deadline = time.monotonic() + self.slow
        while time.monotonic() < deadline and not self.store.exists(key):
            time.sleep(POLL_S)

    def _write(self, chunk: int, results: list[Result]) -> None:
        todo = [r for r in results if r.item.id not in self.plan.skip]
        rows = list(self.uploads.map(self._upload_one, todo))
        entries = [row for row in rows if isinstance(row, Entry)]
        failures = [row for row in rows if isinstance(row, dict)]
        self.ledger.write_record(record_key(self.epoch, chunk), entries, failures)
        with self.lock:
            self.succeeded += len(entries)
            self.failed += len(failures)
        self.ledger.write_counts(f"elastic-{self.epoch}", self.claims.incarnation, self.succeeded, self.failed)
        metrics.ITEMS.labels(result="succeeded").inc(len(entries))
        metrics.ITEMS.labels(result="failed").inc(len(failures))

    def _upload_one(self, result: Result) -> Entry | dict[str, Any]:
        slot = self.claims.slot
        if result.error is not None:
            return failure_row(result, result.error, slot, self.attempt)
        try:
            data = encode(result, self.fmt)
        except (TypeError, ValueError, OSError) as err:
            return failure_row(result, f"{type(err).__name__}: {err}", slot, self.attempt)
        return upload(self.store, result, self.fmt, data, slot, self.attempt)


def slow_seconds(slot: int) -> float:
    raw = os.environ.get(SLOW_ENV, "")
    target, _, seconds = raw.partition(":")
    return float(seconds) if raw and int(target) == slot else 0.0
