"""Claims on work, made through the output store alone: no coordinator that can be lost with its pod.

A worker takes a name (a chunk to compute, the right to publish it, the right to finalize) by creating
`<name>/<generation>` create-only (S3 `If-None-Match: *`, a hard link on local files): of two workers
racing for the same generation exactly one creates it. A claim belongs to a worker *incarnation* (one
process start); the incarnation's heartbeat object is rewritten every few seconds. A claim whose owner's
heartbeat is older than the lease, or whose worker slot has since started a new incarnation (the pod
was replaced), is taken over by creating the next generation. Speculation takes the next generation
even while the owner lives: whoever later wins the publish claim commits, the other discards.

Layout under `_ledger/elastic/<epoch>/`:

    workers/<slot>         {"incarnation", "at"}: the slot's current process and its last heartbeat
    claims/<name>/<gen>    {"slot", "incarnation", "at", "speculative"}
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass

from kubeinfer_runtime.ledger import LEDGER
from kubeinfer_runtime.storage import ObjectStore

log = logging.getLogger(__name__)
#: Seconds without a heartbeat after which a worker's claims are taken over (operators' knob).
LEASE_ENV = "KUBEINFER_LEASE_SECONDS"
DEFAULT_LEASE_S = 30.0


def lease_seconds() -> float:
    return float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE_S)


@dataclass(frozen=True)
class Claim:
    name: str
    generation: int
    slot: int
    incarnation: str
    at: float
    speculative: bool = False


class Claims:
    """One worker incarnation's view of the claims of one epoch (a job UID, or one local run)."""

    def __init__(self, store: ObjectStore, epoch: str, slot: int, lease_s: float | None = None) -> None:
        self.store, self.slot = store, slot
        self.root = f"{LEDGER}/elastic/{epoch}"
        self.incarnation = uuid.uuid4().hex[:12]
        self.lease_s = lease_s or lease_seconds()
        self.stop = threading.Event()
        self.beater = threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True)
        self.workers: dict[int, tuple[str, float]] = {}
        self.workers_read = 0.0

    def start(self) -> Claims:
        self.beat()
        self.beater.start()
        return self

    def close(self) -> None:
        self.stop.set()

    def beat(self) -> None:
        body = json.dumps({"incarnation": self.incarnation, "at": time.time()}).encode()
        self.store.put(f"{self.root}/workers/{self.slot}", body)

    def _beat_forever(self) -> None:
        while not self.stop.wait(self.lease_s / 6):
            try:
                self.beat()
            except Exception as err:  # the store is retried inside; a claim lost to silence is only re-run work
                log.warning("heartbeat: %s", err)

    def alive(self, claim: Claim) -> bool:
        """The claim's incarnation is its slot's current one and beat within the lease."""
        if claim.slot == self.slot:
            return claim.incarnation == self.incarnation
        if time.monotonic() - self.workers_read > min(2.0, self.lease_s / 6):
            self._read_workers()
        current = self.workers.get(claim.slot)
        return current is not None and current[0] == claim.incarnation and time.time() - current[1] < self.lease_s

    def _read_workers(self) -> None:
        workers = {}
        for name in self.store.list(f"{self.root}/workers"):
            try:
                row = json.loads(self.store.get(f"{self.root}/workers/{name}"))
            except FileNotFoundError:
                continue
            workers[int(name)] = (str(row["incarnation"]), float(row["at"]))
        self.workers, self.workers_read = workers, time.monotonic()

    def latest(self, name: str) -> Claim | None:
        """The name's newest claim: one small LIST (its generations) and one read."""
        generations = [int(g) for g in self.store.list(f"{self.root}/claims/{name}")]
        if not generations:
            return None
        generation = max(generations)
        row = json.loads(self.store.get(f"{self.root}/claims/{name}/{generation:03d}"))
        return Claim(name=name, generation=generation, **row)

    def take(self, name: str, after: Claim | None = None, speculative: bool = False) -> Claim | None:
        """Create the generation after `after` (the first without one); None when another worker got it."""
        generation = 0 if after is None else after.generation + 1
        claim = Claim(name=name, generation=generation, slot=self.slot, incarnation=self.incarnation,
                      at=time.time(), speculative=speculative)
        body = json.dumps({"slot": claim.slot, "incarnation": claim.incarnation, "at": claim.at,
                           "speculative": speculative}).encode()
        if self.store.put_new(f"{self.root}/claims/{name}/{generation:03d}", body):
            return claim
        return None

    def take_over(self, name: str) -> Claim | None:
        """The name's first claim, or the next generation when its holder is gone; None while it is held.

        Tries generation 0 first (one request when nobody holds the name, the common case)."""
        first = self.take(name)
        if first is not None:
            return first
        latest = self.latest(name)
        if latest is not None and (latest.incarnation == self.incarnation or self.alive(latest)):
            return latest if latest.incarnation == self.incarnation else None
        return self.take(name, after=latest)
