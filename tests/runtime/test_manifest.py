"""manifest.jsonl merged from the commit records as it streams: equal to the whole ledger read into memory,
with its counts, whatever the overlap between records, and with a gap reported."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, replace
from pathlib import Path

from runtime.test_ledger import entry, failure, job

from kubeinfer_runtime.inputs import load_items
from kubeinfer_runtime.ledger import MANIFEST, Entry, Ledger, entry_line
from kubeinfer_runtime.storage import ObjectStore


def reference(ledger: Ledger) -> bytes:
    """The manifest as the whole ledger says it, every entry in memory (what resume planning reads)."""
    return b"".join(entry_line(e) for e in ledger.state().sorted_entries())


def test_the_streamed_manifest_equals_the_ledger_read_whole(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path))
    ledger = Ledger(store)
    items = load_items(job(prompts=tuple(f"p{i}" for i in range(300))).spec)
    rng = random.Random(7)
    # Three writers, each committing its share in records of a few items that finish out of order, so
    # records overlap; a speculative duplicate; failures, one of them committed by a later attempt.
    for writer in range(3):
        mine = [item for item in items if item.index % 3 == writer]
        rng.shuffle(mine)
        for number in range(0, len(mine), 16):
            part = sorted(mine[number:number + 16], key=lambda i: i.index)
            entries = [entry(i, f"{writer}-{i.id}".encode(), rank=writer) for i in part if i.index % 50]
            failures = [failure(i, f"boom {writer}") for i in part if not i.index % 50]
            ledger.write_record(f"a000-run-r{writer:05d}-{number:06d}", entries, failures)
    ledger.write_record("a000-run-r00009-000000", [entry(items[7], b"late copy", rank=9)], [])
    ledger.write_record("a001-again-r00000-000000", [entry(items[100], b"retried")], [])
    ledger.write_record("a001-again-r00000-000001", [], [failure(items[150], "last word")])
    tally = ledger.write_manifest(len(items))
    assert store.get(MANIFEST) == reference(ledger)
    lines = [json.loads(line) for line in store.get(MANIFEST).splitlines()]
    assert [row["index"] for row in lines] == sorted({row["index"] for row in lines}), "each item once, in order"
    assert next(row for row in lines if row["index"] == 7)["rank"] == 1, "the first record by name wins"
    failed = sorted(i.id for i in items if not i.index % 50 and i.index != 100)
    assert (tally.succeeded, tally.failed, tally.missing) == (300 - len(failed), len(failed), 0)
    assert sorted(tally.failed_ids) == failed
    assert tally.bytes == sum(row["bytes"] for row in lines)


def test_a_gap_and_an_old_ledger(tmp_path: Path) -> None:
    """Items of an old ledger (one object per item) are merged in; an item with no outcome is missing."""
    store = ObjectStore(str(tmp_path))
    ledger = Ledger(store)
    items = load_items(job(prompts=tuple("abcdef")).spec)
    old = tmp_path / "_ledger"
    (old / "items").mkdir(parents=True)
    (old / "failed").mkdir()
    (old / "items" / "00000.json").write_text(json.dumps(asdict(entry(items[0], b"zero"))))
    (old / "failed" / "00001.json").write_text(json.dumps(failure(items[1], "OSError: old")))
    ledger.write_record("a001-new-r00000-000000", [entry(items[2], b"two"), entry(items[5], b"five")], [])
    ledger.write_record("a001-new-r00001-000000", [], [failure(items[1], "OSError: new")])
    tally = ledger.write_manifest(len(items))
    assert store.get(MANIFEST) == reference(ledger)
    assert [Entry(**json.loads(line)).index for line in store.get(MANIFEST).splitlines()] == [0, 2, 5]
    assert (tally.succeeded, tally.failed, tally.failed_ids) == (3, 1, ["00001"])
    assert tally.first_failure["error"] == "OSError: new", "a record's failure is later than an old object's"
    assert (tally.missing, tally.first_missing) == (2, 3)


def test_the_contact_sheet_reads_only_the_head_of_the_manifest(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path))
    ledger = Ledger(store)
    items = load_items(job(prompts=tuple(f"p{i}" for i in range(1000))).spec)
    long = [replace(entry(i, b"x"), prompt="a long prompt " * 40) for i in items]  # 256 lines span 3 reads
    ledger.write_record("a000-r-r00000-000000", long, [])
    ledger.write_manifest(len(items))
    head = ledger.manifest_head(256)
    assert [e.index for e in head] == list(range(256))
    assert head == ledger.state().sorted_entries()[:256]
