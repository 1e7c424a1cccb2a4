"""Commit records: a few requests per thousand fast items, a slow item recorded within seconds, exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kubeinfer_runtime.ledger import Ledger
from kubeinfer_runtime.outputs import Committer
from kubeinfer_runtime.storage import ObjectStore
from kubeinfer_runtime.strategies.base import Item, Result


class CountingStore(ObjectStore):
    """A real local store that counts its writes (what S3 would bill as PUTs)."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.writes: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.writes.append(key)
        super().put(key, data)


def text_result(index: int) -> Result:
    return Result(item=Item(index=index, id=f"{index:07d}", prompt=f"p{index}", seed=index), output=f"t{index}")


def test_bookkeeping_costs_a_few_writes_per_thousand_items(tmp_path: Path) -> None:
    store = CountingStore(str(tmp_path))
    ledger = Ledger(store)
    committer = Committer(store, ledger, "jsonl", rank=0, attempt=0, run_id="run", record_items=1024,
                          record_seconds=3600)
    for i in range(3000):
        committer.submit(text_result(i))
    committer.submit(Result(item=Item(index=3000, id="0003000", prompt="bad", seed=0), error="ValueError: x"))
    stats = committer.close()
    assert (stats.succeeded, stats.failed) == (3000, 1)
    bookkeeping = [k for k in store.writes if not k.startswith("items/")]
    assert len([k for k in store.writes if k.startswith("items/")]) == 3000
    assert len(bookkeeping) <= 0.05 * 3000 * 0.1, bookkeeping  # 3 records + 3 count updates
    state = ledger.state()
    assert len(state.entries) == 3000 and state.failed() == {"0003000"}
    assert ledger.counts("run", 1) == (3000, 1)
    lines = [line for p in (tmp_path / "_ledger" / "commits").iterdir() for line in p.read_text().splitlines()]
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids)) == 3001, "every item in exactly one record"


def test_a_slow_item_is_recorded_without_waiting_for_more(tmp_path: Path) -> None:
    ledger = Ledger(ObjectStore(str(tmp_path)))
    committer = Committer(ledger.store, ledger, "jsonl", rank=0, attempt=0, record_seconds=0.2)
    committer.submit(text_result(0))
    deadline = time.monotonic() + 30
    while not ledger.committed() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.committed() == {"0000000"}, "the record of a lone item must be written once it is old"
    committer.submit(text_result(1))
    committer.close()
    assert ledger.committed() == {"0000000", "0000001"}


def test_items_committed_before_are_not_written_again(tmp_path: Path) -> None:
    """Batch-mates recomputed to keep a batch whole keep their first commit."""
    store = CountingStore(str(tmp_path))
    ledger = Ledger(store)
    committer = Committer(store, ledger, "jsonl", rank=0, attempt=1, skip=frozenset({"0000001"}))
    for i in range(3):
        committer.submit(text_result(i))
    assert committer.close().succeeded == 2
    assert "items/0000001.jsonl" not in store.writes and ledger.committed() == {"0000000", "0000002"}
