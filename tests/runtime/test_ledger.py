"""The ledger: deterministic keys, commit after the object, fingerprints refusing a foreign job, manifest order."""

from __future__ import annotations

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


def test_commit_failures_and_manifest_order(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path))
    ledger = Ledger(store)
    items = load_items(job(prompts=("a", "b", "c")).spec)
    ledger.fail(items[1], "ValueError: boom", rank=1, attempt=0)
    for item in (items[2], items[0]):
        store.put(item_key(item.id, "png"), b"png" + item.id.encode())
        ledger.commit(entry(item, b"png" + item.id.encode()))
    assert ledger.committed() == {"00000", "00002"}
    assert ledger.failed() == {"00001"}
    assert ledger.failure("00001")["error"] == "ValueError: boom"
    ledger.commit(entry(items[1], b"x"))  # a later attempt succeeds: no longer failed
    assert ledger.failed() == set()
    assert [e.index for e in ledger.entries()] == [0, 1, 2]


def test_object_without_entry_is_not_committed_and_is_overwritten(tmp_path: Path) -> None:
    """A crash between the upload and the ledger entry: the retry writes the same key, nothing twice."""
    store = ObjectStore(str(tmp_path))
    ledger = Ledger(store)
    item = load_items(job().spec)[0]
    store.put(item_key(item.id, "png"), b"first try")
    assert ledger.committed() == set()
    store.put(item_key(item.id, "png"), b"second try")
    ledger.commit(entry(item, b"second try"))
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == ["00000.png"]
    assert ledger.entries()[0].sha256 == entry(item, b"second try").sha256


def test_done_markers_count_ranks_per_run(tmp_path: Path) -> None:
    ledger = Ledger(ObjectStore(str(tmp_path)))
    ledger.mark_done("run1", 0)
    ledger.mark_done("run1", 1)
    ledger.mark_done("run1", 1)
    ledger.mark_done("run2", 0)
    assert (ledger.done_ranks("run1"), ledger.done_ranks("run2"), ledger.done_ranks("run3")) == (2, 1, 0)
