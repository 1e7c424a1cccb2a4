"""Start-up phases: where the time from container start to a rank's first item went.

Each rank keeps a timeline (`StartupClock`): rendezvous (container start until the group formed and
the work was shared), fetch (waiting for the model's files), load (to the device), warmup
(compilation, timed where it happens and taken out of that phase) and firstItem. It writes its record at each
step as a new immutable object `_startup/a<attempt>/r<rank>.<step>.json` under the output prefix,
so a reader lists once and reads only what is new. Rank 0 collects them in a thread and reports the
slowest rank's phases plus the model bytes every process read, by source, in `Progress.startup`;
the operator copies it to `status.startup`. Each phase is also a Prometheus histogram
(`kubeinfer_startup_phase_seconds{phase}`), and fetched bytes a counter
(`kubeinfer_model_fetch_bytes_total{source}`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

from kubeinfer_api.status import StartupStatus
from kubeinfer_runtime.storage import ObjectStore

log = logging.getLogger("kubeinfer.startup")
PREFIX = "_startup"
#: Unix time the container started (set by the pod's launcher for its ranks); else the process start.
STARTED_ENV = "KUBEINFER_CONTAINER_STARTED_AT"
PHASES = ("rendezvous", "fetch", "load", "warmup", "firstItem")
SOURCES = ("storage", "peers", "cache")
_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)

PHASE_SECONDS = Histogram("kubeinfer_startup_phase_seconds", "Seconds a rank spent in each start-up phase",
                          ["phase"], buckets=_BUCKETS)
FETCH_BYTES = Counter("kubeinfer_model_fetch_bytes", "Model bytes read, by source (storage, peers, cache)",
                      ["source"])


class Publisher(Protocol):
    def set(self, **fields: Any) -> None: ...


def container_started_at() -> float:
    raw = os.environ.get(STARTED_ENV, "")
    try:
        return float(raw)
    except ValueError:
        return time.time()


def mark_container_start() -> None:
    """In the pod's launcher, before the ranks start: their rendezvous phase then counts from here."""
    os.environ.setdefault(STARTED_ENV, f"{time.time():.3f}")


@dataclass
class RankRecord:
    rank: int
    attempt: int
    pod: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    model_bytes: int = 0
    download_seconds: float = 0.0  # the pod's model download, which may overlap the rendezvous
    final: bool = False  # firstItem reached, or the rank finished without an item of its own


class StartupClock:
    """One rank's timeline; `mark` ends the current phase, `record` writes the record so far."""

    def __init__(self, rank: int, attempt: int, store: ObjectStore | None, started_at: float | None = None) -> None:
        self.record_ = RankRecord(rank=rank, attempt=attempt, pod=os.environ.get("KUBEINFER_POD_NAME", ""))
        self.store = store
        self.last = started_at if started_at is not None else container_started_at()
        self.steps = 0
        self.warmup = 0.0

    def mark(self, phase: str) -> float:
        """End `phase` now: it lasted since the previous mark, less any warm-up timed meanwhile (reported apart)."""
        now = time.time()
        seconds = max(now - self.last - self.warmup, 0.0)
        if self.warmup:
            self._set("warmup", self.record_.seconds.get("warmup", 0.0) + self.warmup, observe=False)
            self.warmup = 0.0
        self.last = now
        self._set(phase, seconds)
        self.record_.final = self.record_.final or phase == "firstItem"
        self.publish()
        return seconds

    @contextmanager
    def warming_up(self) -> Iterator[None]:
        """Time a warm-up (compilation) inside another phase; it is reported as its own phase."""
        began = time.time()
        try:
            yield
        finally:
            self.warmup += time.time() - began

    def fetched(self, source: str, nbytes: int, model_bytes: int) -> None:
        """Model bytes this process read from `source` (storage, peers or cache)."""
        if nbytes:
            self.record_.bytes[source] = self.record_.bytes.get(source, 0) + nbytes
            FETCH_BYTES.labels(source).inc(nbytes)
        self.record_.model_bytes = max(self.record_.model_bytes, model_bytes)

    def downloaded(self, seconds: float) -> None:
        self.record_.download_seconds = max(self.record_.download_seconds, round(seconds, 3))

    def finish(self) -> None:
        """The rank is done; a rank that owned no item still reports its phases."""
        if not self.record_.final:
            self.record_.final = True
            self.publish()
        if "warmup" in self.record_.seconds:
            PHASE_SECONDS.labels("warmup").observe(self.record_.seconds["warmup"])

    def _set(self, phase: str, seconds: float, observe: bool = True) -> None:
        if observe and phase not in self.record_.seconds:
            PHASE_SECONDS.labels(phase).observe(seconds)
        self.record_.seconds[phase] = round(seconds, 3)

    def publish(self) -> None:
        """Write the record as a new object (never fails the rank: start-up timing is diagnostics)."""
        if self.store is None:
            return
        self.steps += 1
        key = f"{PREFIX}/a{self.record_.attempt}/r{self.record_.rank}.{self.steps}.json"
        try:
            self.store.put(key, json.dumps(asdict(self.record_), sort_keys=True).encode())
        except Exception as err:  # storage trouble shows up in the items' commits, not here
            log.warning("startup: cannot write %s: %s", key, err)


_clock: StartupClock | None = None


def set_clock(clock: StartupClock) -> StartupClock:
    """Make `clock` this process's clock (hooks deep in the strategies reach it with `clock()`)."""
    global _clock
    _clock = clock
    return clock


def clock() -> StartupClock | None:
    return _clock


def mark(phase: str) -> None:
    """End `phase` on this process's clock, if there is one."""
    if _clock is not None:
        _clock.mark(phase)


def fetched(source: str, nbytes: int, model_bytes: int) -> None:
    if _clock is not None:
        _clock.fetched(source, nbytes, model_bytes)
    elif nbytes:
        FETCH_BYTES.labels(source).inc(nbytes)


def downloaded(seconds: float) -> None:
    """The pod's launcher downloaded the model in `seconds` (overlapping this rank's start)."""
    if _clock is not None:
        _clock.downloaded(seconds)


@contextmanager
def warming_up() -> Iterator[None]:
    """Time a warm-up on this process's clock, if there is one."""
    current = _clock
    if current is None:
        yield
        return
    with current.warming_up():
        yield


def summarize(records: list[RankRecord], attempt: int) -> StartupStatus:
    """The slowest rank's phases (latest first item) and the bytes of every record, by source."""
    status = StartupStatus(attempt=attempt, ranks_reported=len(records))
    if not records:
        return status
    slowest = max(records, key=lambda r: (sum(r.seconds.values()), -r.rank))
    phases = {p: slowest.seconds.get(p, 0.0) for p in PHASES}
    totals = {s: sum(r.bytes.get(s, 0) for r in records) for s in SOURCES}
    return status.model_copy(update={
        "slowest_rank": slowest.rank, "rendezvous_seconds": phases["rendezvous"], "fetch_seconds": phases["fetch"],
        "load_seconds": phases["load"], "warmup_seconds": phases["warmup"],
        "first_item_seconds": phases["firstItem"], "total_seconds": round(sum(phases.values()), 3),
        "download_seconds": max(r.download_seconds for r in records),
        "model_bytes": max(r.model_bytes for r in records), "bytes_from_storage": totals["storage"],
        "bytes_from_peers": totals["peers"], "bytes_from_cache": totals["cache"]})


def describe(s: StartupStatus) -> str:
    """One log line: the slowest rank's phases and where the model's bytes came from."""
    mib = 2**20
    return (f"startup (slowest: rank {s.slowest_rank}): rendezvous {s.rendezvous_seconds:.1f}s, fetch "
            f"{s.fetch_seconds:.1f}s, load {s.load_seconds:.1f}s, warmup {s.warmup_seconds:.1f}s, first item "
            f"{s.first_item_seconds:.1f}s = {s.total_seconds:.1f}s; model {s.model_bytes / mib:.1f} MiB, read "
            f"{s.bytes_from_storage / mib:.1f} MiB from storage, {s.bytes_from_peers / mib:.1f} MiB from peers, "
            f"{s.bytes_from_cache / mib:.1f} MiB from the cache")


class Collector:
    """Rank 0: reads the ranks' records every `interval` seconds and publishes the summary when it changes."""

    def __init__(self, store: ObjectStore, attempt: int, world_size: int, publisher: Publisher,
                 interval: float = 5.0) -> None:
        self.store, self.attempt, self.world, self.publisher = store, attempt, world_size, publisher
        self.interval = interval
        self.latest: dict[int, tuple[int, RankRecord]] = {}
        self.reported: StartupStatus | None = None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="startup", daemon=True)

    def start(self) -> Collector:
        self.thread.start()
        return self

    def complete(self) -> bool:
        return len(self.latest) >= self.world and all(r.final for _, r in self.latest.values())

    def collect(self) -> None:
        """Read the records written since the last look and publish the new summary."""
        prefix = f"{PREFIX}/a{self.attempt}"
        for name in self.store.list(prefix):
            rank_part, _, rest = name.partition(".")
            step = rest.removesuffix(".json")
            if not (rank_part.startswith("r") and rank_part[1:].isdigit() and step.isdigit()):
                continue
            rank = int(rank_part[1:])
            if rank in self.latest and self.latest[rank][0] >= int(step):
                continue
            raw = json.loads(self.store.get(f"{prefix}/{name}"))
            self.latest[rank] = (int(step), RankRecord(**raw))
        summary = summarize([r for _, r in self.latest.values()], self.attempt)
        if summary != self.reported:
            self.reported = summary
            self.publisher.set(startup=summary)

    def stop(self) -> None:
        """A last look (every rank wrote its record before its done marker), then stop."""
        self.stop_event.set()
        try:
            self.collect()
        except Exception as err:
            log.warning("startup: cannot read the ranks' records: %s", err)
        if self.reported is not None:
            log.info("%s", describe(self.reported))

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.collect()
            except Exception as err:  # a storage hiccup must not stop the job
                log.warning("startup: cannot read the ranks' records: %s", err)
            if self.complete():
                return
