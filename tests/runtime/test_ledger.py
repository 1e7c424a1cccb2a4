"""The ledger: deterministic keys, commit records after the objects, old ledgers, fingerprints, manifest order."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from kubeinfer_api.jobconfig import JobConfig, make_job_config
from kubeinfer_api.validation import parse_spec
from kubeinfer_runtime.inputs import load_items
from kubeinfer_runtime.ledger import Entry, FingerprintMismatch, Ledger, fingerprint, item_key
from kubeinfer_runtime.storage import ObjectStore
from kubeinfer_runtime.strategies.base import Item


def job(name: str = "j", seed: int = 0, prompts: tuple[str, ...] = ("a", "b"), **task: Any) -> JobConfig:
    spec = parse_spec({"model": {"uri": "/m"}, "task": {"seed": seed, **task}, "inputs": {"prompts": list(prompts)},
                       "output": {"uri": "/o"}})
    return make_job_config(name, spec)


def entry(item: Item, data: bytes, rank: int = 0) -> Entry:
    import hashlib

    return Entry(id=item.id, index=item.index, key=item_key(item.id, "png"), bytes=len(data),
                 sha256=hashlib.sha256(data).hexdigest(), seed=item.seed, rank=rank, attempt=0, seconds=0.1)


def test_keys_depend_on_the_item_only() -> None:
    assert item_key("00007", "png") == "items/00007.png"
    assert item_key("cat", "jpeg") == "items/cat.jpg"
    assert item_key("t", "jsonl") == "items/t.jsonl"


def test_fingerprint_ignores_workers_and_name_but_not_task_or_inputs() -> None:
    base = job()
    items = load_items(base.spec)
    same = fingerprint(job(name="other"), load_items(job(name="other").spec))
    assert fingerprint(base, items)["fingerprint"] == same["fingerprint"]
    assert fingerprint(job(seed=1), load_items(job(seed=1).spec))["fingerprint"] != same["fingerprint"]
    changed = job(prompts=("a", "c"))
    assert fingerprint(changed, load_items(changed.spec))["fingerprint"] != same["fingerprint"]


def test_a_different_job_on_the_same_prefix_is_refused(tmp_path: Path) -> None:
    ledger = Ledger(ObjectStore(str(tmp_path)))
    first = job(name="first")
    ledger.claim(first, fingerprint(first, load_items(first.spec)))
    again = job(name="renamed")  # same model, task and inputs: resumes
    ledger.claim(again, fingerprint(again, load_items(again.spec)))
    other = job(name="second", parameters={"height": 64})
    with pytest.raises(FingerprintMismatch, match=r"spec.output.uri: .* job 'first' \(different task\)"):
        ledger.claim(other, fingerprint(other, load_items(other.spec)))


def failure(item: Item, error: str, rank: int = 0, attempt: int = 0) -> dict[str, Any]:
    return {"id": item.id, "index": item.index, "error": error, "rank": rank, "attempt": attempt}


def test_records_commit_failures_and_the_manifest_is_in_order(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path))
    ledger = Ledger(store)
    items = load_items(job(prompts=("a", "b", "c")).spec)
    ledger.write_record("a000-run-r00001-000000", [], [failure(items[1], "ValueError: boom", rank=1)])
    for item in (items[2], items[0]):
        store.put(item_key(item.id, "png"), b"png" + item.id.encode())
    ledger.write_record("a000-run-r00000-000000", [entry(items[2], b"png2"), entry(items[0], b"png0")], [])
    state = ledger.state()
    assert set(state.entries) == {"00000", "00002"} and state.failed() == {"00001"}
    assert state.failures["00001"]["error"] == "ValueError: boom"
    ledger.write_record("a001-run2-r00000-000000", [entry(items[1], b"x")], [])  # a later attempt succeeds
    assert ledger.failed() == set()
    assert [e.index for e in ledger.entries()] == [0, 1, 2]
    records = sorted((tmp_path / "_ledger" / "commits").iterdir())
    assert records[0].name == "a000-run-r00000-000000.jsonl"
    lines = records[0].read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 2], "a record lists its items in index order"


def test_the_first_record_of_an_item_wins(tmp_path: Path) -> None:
    """A speculative or repeated computation of an item is listed once, as first committed."""
    ledger = Ledger(ObjectStore(str(tmp_path)))
    item = load_items(job().spec)[0]
    ledger.write_record("a000-x-r00000-000000", [entry(item, b"first", rank=0)], [])
    ledger.write_record("a000-x-r00001-000000", [entry(item, b"first", rank=1)], [])
    assert [(e.id, e.rank) for e in ledger.entries()] == [("00000", 0)]


def test_a_ledger_of_one_object_per_item_still_resumes(tmp_path: Path) -> None:
    """The layout before commit records: `_ledger/items/<id>.json` and `_ledger/failed/<id>.json`."""
    ledger = Ledger(ObjectStore(str(tmp_path)))
    items = load_items(job(prompts=("a", "b", "c")).spec)
    old = tmp_path / "_ledger"
    (old / "items").mkdir(parents=True)
    (old / "failed").mkdir()
    (old / "items" / "00000.json").write_text(json.dumps(asdict(entry(items[0], b"zero"))))
    (old / "failed" / "00001.json").write_text(json.dumps(failure(items[1], "OSError: old")))
    ledger.write_record("a001-new-r00000-000000", [entry(items[2], b"two")], [])
    state = ledger.state()
    assert sorted(state.entries) == ["00000", "00002"] and state.failed() == {"00001"}
    assert state.failures["00001"]["error"] == "OSError: old"


def test_object_without_record_is_not_committed_and_is_overwritten(tmp_path: Path) -> None:
    """A crash between the upload and the commit record: the retry writes the same key, nothing twice."""
    store = ObjectStore(str(tmp_path))
    ledger = Ledger(store)
    item = load_items(job().spec)[0]
    store.put(item_key(item.id, "png"), b"first try")
    assert ledger.committed() == set()
    store.put(item_key(item.id, "png"), b"second try")
    ledger.write_record("a001-r-r00000-000000", [entry(item, b"second try")], [])
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == ["00000.png"]
    assert ledger.entries()[0].sha256 == entry(item, b"second try").sha256


def test_counts_add_up_the_ranks_of_one_run(tmp_path: Path) -> None:
    ledger = Ledger(ObjectStore(str(tmp_path)))
    ledger.write_counts("run1", 0, succeeded=5, failed=1)
    ledger.write_counts("run1", 2, succeeded=7, failed=0)
    ledger.write_counts("run2", 1, succeeded=100, failed=100)
    assert ledger.counts("run1", 3) == (12, 1), "rank 1 has not written yet: counts 0"
    assert ledger.counts("run3", 2) == (0, 0)


def test_done_markers_count_ranks_per_run(tmp_path: Path) -> None:
    ledger = Ledger(ObjectStore(str(tmp_path)))
    ledger.mark_done("run1", 0)
    ledger.mark_done("run1", 1)
    ledger.mark_done("run1", 1)
    ledger.mark_done("run2", 0)
    assert (ledger.done_ranks("run1"), ledger.done_ranks("run2"), ledger.done_ranks("run3")) == (2, 1, 0)
