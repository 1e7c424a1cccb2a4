"""manifest.jsonl from the commit records, in item order, holding only the records that overlap.

Every record is sorted by item index. A first pass reads the head of each record (its first index,
one small ranged read); the merge then opens records in order of their first index and keeps open
only those that can still hold the next index. Ranks and elastic workers write increasing indices,
so a few records are open at a time: finalizing a million items holds a few thousand rows, not a
million entries. An item named by several records is listed once: the first committing record by
name wins (as `Ledger.state`), and a failure counts only for an item no record committed, reported
with its last failure.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kubeinfer_runtime.storage import ObjectStore

HEAD_BYTES = 64 * 1024
FAILED_IDS_KEPT = 1000


@dataclass
class Tally:
    """What the merge saw: counts, bytes, the first failed ids and the first missing index."""

    total: int
    succeeded: int = 0
    bytes: int = 0
    failed: int = 0
    failed_ids: list[str] = field(default_factory=list)
    first_failure: dict[str, Any] = field(default_factory=dict)
    missing: int = 0
    first_missing: int | None = None


@dataclass
class Source:
    """One record: its key (or its rows, for the per-item objects of an old ledger) and its precedence."""

    order: int  # entries: lower wins; failures: higher wins (the last one is reported)
    key: str = ""
    data: bytes | None = None
    first: int = 0


def first_index(data: bytes) -> int:
    line = data.split(b"\n", 1)[0]
    return int(json.loads(line)["index"])


def merged_rows(store: ObjectStore, sources: list[Source]) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(row, line) for each item index once, in index order: its winning entry, else its last failure."""
    sources = sorted(sources, key=lambda s: s.first)
    heap: list[tuple[int, int, int, int, dict[str, Any], bytes, Iterator[bytes]]] = []
    opened = 0

    def open_next() -> None:
        nonlocal opened
        source = sources[opened]
        data = source.data if source.data is not None else store.get(source.key)
        lines = iter(data.splitlines())
        push(opened, source, lines)
        opened += 1

    def push(number: int, source: Source, lines: Iterator[bytes]) -> None:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                failure = "error" in row
                heapq.heappush(heap, (int(row["index"]), int(failure), -source.order if failure else source.order,
                                      number, row, line, lines))
                return

    last = -1
    while heap or opened < len(sources):
        while opened < len(sources) and (not heap or sources[opened].first <= heap[0][0]):
            open_next()
        index, _, _, number, row, line, lines = heapq.heappop(heap)
        push(number, sources[number], lines)
        if index != last:
            last = index
            yield row, line + b"\n"


def manifest_lines(store: ObjectStore, sources: list[Source], tally: Tally) -> Iterator[bytes]:
    """The manifest's lines a few thousand at a time, counting into `tally` as they go."""
    batch: list[bytes] = []
    expected = 0
    for row, line in merged_rows(store, sources):
        index = int(row["index"])
        if index > expected:
            tally.missing += index - expected
            tally.first_missing = expected if tally.first_missing is None else tally.first_missing
        expected = index + 1
        if "error" in row:
            tally.failed += 1
            if len(tally.failed_ids) < FAILED_IDS_KEPT:
                tally.failed_ids.append(str(row["id"]))
            tally.first_failure = tally.first_failure or row
            continue
        tally.succeeded += 1
        tally.bytes += int(row["bytes"])
        batch.append(line)
        if len(batch) >= 4096:
            yield b"".join(batch)
            batch = []
    if expected < tally.total:
        tally.missing += tally.total - expected
        tally.first_missing = expected if tally.first_missing is None else tally.first_missing
    if batch:
        yield b"".join(batch)
