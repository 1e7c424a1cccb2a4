"""Resume planning: whole batch windows, the committed batch-mates skipped, and the compact broadcast of the plan."""

from __future__ import annotations

from pathlib import Path

from kubeinfer_api.jobconfig import make_job_config
from kubeinfer_api.validation import parse_spec
from kubeinfer_runtime.inputs import load_items
from kubeinfer_runtime.ledger import Entry, Ledger, item_key
from kubeinfer_runtime.rank import Announcement, plan_work
from kubeinfer_runtime.storage import ObjectStore


def committed_entry(index: int) -> Entry:
    item_id = f"{index:05d}"
    return Entry(id=item_id, index=index, key=item_key(item_id, "png"), bytes=1, sha256="x", seed=index, rank=0,
                 attempt=0, seconds=0.1)


def test_a_half_committed_batch_is_planned_whole_and_announced_compactly(tmp_path: Path) -> None:
    spec = parse_spec({"model": {"uri": "/m"}, "task": {"type": "text-to-image"},
                       "inputs": {"prompts": [f"p{i}" for i in range(14)]}, "strategy": {"batchSize": 4},
                       "output": {"uri": str(tmp_path)}})
    config = make_job_config("plan", spec)
    ledger = Ledger(ObjectStore(str(tmp_path)))
    # Batches [0-3] and [8-11] fully committed, [4-7] half, [12-13] not at all.
    done = [0, 1, 2, 3, 4, 6, 8, 9, 10, 11]
    ledger.write_record("a000-r-r00000-000000", [committed_entry(i) for i in done], [])
    work = plan_work(config, ledger)
    assert [item.index for item in work.pending] == [4, 5, 6, 7, 12, 13]
    assert work.skip == {"00004", "00006"} and work.to_do == 4 and work.total == 14
    announced = Announcement.of(work)
    assert announced.open_windows == [(1, 2), (3, 4)]
    assert announced.work(load_items(spec)) == work, "every rank must derive the same work"
