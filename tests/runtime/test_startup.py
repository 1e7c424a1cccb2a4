"""Start-up phases: each rank's timeline in the output store and rank 0's summary (the e2e fan-out test runs
the whole path: records, collector, progress report, `status.startup`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kubeinfer_runtime.startup import PREFIX, Collector, RankRecord, StartupClock
from kubeinfer_runtime.storage import ObjectStore


class Published:
    def __init__(self) -> None:
        self.fields: list[dict[str, Any]] = []

    def set(self, **fields: Any) -> None:
        self.fields.append(fields)


def test_ranks_write_their_timeline_and_rank_zero_reports_the_slowest(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path / "out"))
    now = time.time()
    fast, slow = StartupClock(0, 2, store, started_at=now - 1), StartupClock(1, 2, store, started_at=now - 5)
    publisher = Published()
    collector = Collector(store, 2, 2, publisher, interval=3600)
    fast.mark("rendezvous")
    slow.mark("rendezvous")
    slow.fetched("storage", 300, 300)
    fast.fetched("peers", 300, 300)
    for clock in (fast, slow):
        clock.mark("fetch")
        with clock.warming_up():
            time.sleep(0.05)  # a compilation stand-in: its time moves from load to warmup
        clock.mark("load")
    collector.collect()
    collector.collect()
    assert not collector.complete(), "no rank has reached its first item yet"
    assert len(publisher.fields) == 1, "the summary is published only when it changes"
    fast.mark("firstItem")
    slow.finish()  # a rank that owns no outputs (e.g. a context-parallel follower)
    collector.stop()
    assert collector.complete()
    summary = publisher.fields[-1]["startup"]
    assert summary.slowest_rank == 1 and summary.ranks_reported == 2 and summary.attempt == 2
    assert 4.9 < summary.rendezvous_seconds < 6.0 and summary.warmup_seconds >= 0.05
    assert summary.load_seconds < 0.05, "warm-up time is not counted twice"
    assert (summary.bytes_from_storage, summary.bytes_from_peers, summary.model_bytes) == (300, 300, 300)
    names = sorted(store.list(f"{PREFIX}/a2"))
    assert names == ["r0.1.json", "r0.2.json", "r0.3.json", "r0.4.json", "r1.1.json", "r1.2.json", "r1.3.json",
                     "r1.4.json"], "one new object per step: readers never see a record change"
    last = RankRecord(**json.loads(store.get(f"{PREFIX}/a2/r0.4.json")))
    assert last.final and set(last.seconds) == {"rendezvous", "fetch", "load", "warmup", "firstItem"}
    assert len(publisher.fields) == 1, "rank 0's first item left the slowest rank's phases unchanged"
