"""Work as index ranges: views that make items only when reached, open windows from a byte per item, and a
JSONL file held as bytes and offsets (its check, its digest and its duplicate ids without a set of ids)."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from kubeinfer_runtime.inputs import InputError, parse_jsonl
from kubeinfer_runtime.ledger import inputs_digest
from kubeinfer_runtime.strategies.base import Item
from kubeinfer_runtime.strategies.common import in_groups, iter_batches, windows_for_replica
from kubeinfer_runtime.windows import covers, done_marks, open_windows, window_view


def items(count: int) -> list[Item]:
    return [Item(index=i, id=f"{i:05d}", prompt=f"p{i}", seed=i) for i in range(count)]


def test_a_view_indexes_slices_and_iterates_like_the_list_it_stands_for() -> None:
    every = items(20)
    view = window_view(every, [(0, 1), (3, 5)], 4)  # windows 0, 3 and 4 (the last one short: items 16-19)
    expected = every[0:4] + every[12:20]
    assert list(view) == expected and len(view) == len(expected)
    assert [view[i] for i in range(-len(view), len(view))] == expected + expected
    for start in range(len(expected) + 1):
        for stop in range(start, len(expected) + 2):
            assert list(view[start:stop]) == expected[start:stop]
    assert view == expected and view.windows(4) == [(0, 1), (3, 5)]
    assert view[2:7].windows(4) == [(0, 1), (3, 4)]
    with pytest.raises(IndexError):
        view[len(expected)]


def test_open_windows_and_the_skipped_batch_mates() -> None:
    done = done_marks([0, 1, 2, 3, 4, 6, 8, 9, 10, 11, 99], 14)  # an index past the end is ignored
    windows = open_windows(done, 4)
    assert windows == [(1, 2), (3, 4)]
    assert [n for n in range(5) if covers(windows, n)] == [1, 3]
    assert open_windows(bytearray(10), 3) == [(0, 4)], "nothing done: every window, the last one short"
    assert open_windows(bytearray(b"\x01" * 6), 2) == []


@pytest.mark.parametrize(("count", "shares"), [(2, [[0, 1, 3], [4, 5]]), (3, [[0, 1], [3, 4], [5]]),
                                               (6, [[0], [1], [3], [4], [5], []])])
def test_replicas_split_the_open_windows_contiguously_and_whole(count: int, shares: list[list[int]]) -> None:
    """A deviceMap pod's or a context group's share: accelerate's contiguous split of the windows (the first
    shares one longer), the same from a view as from the list it stands for, every item once, no window cut."""
    every = items(23)
    view = window_view(every, [(0, 2), (3, 6)], 4)  # windows 0, 1, 3, 4 and 5 (the last one short: 20-22)
    got = [windows_for_replica(view, 4, index, count) for index in range(count)]
    assert [sorted({item.index // 4 for item in share}) for share in got] == shares
    assert [list(share) for share in got] == [windows_for_replica(list(view), 4, i, count) for i in range(count)]
    assert sorted(item.index for share in got for item in share) == [item.index for item in view]
    batches = [batch for share in got for batch in iter_batches(share, 4, {})]
    assert [[item.index for item in batch] for batch in batches] == [
        [i for i in range(w * 4, min(w * 4 + 4, 23))] for w in (0, 1, 3, 4, 5)]
    assert [len(group) for group in in_groups(iter(batches), 2)] == [2, 2, 1]


def jsonl(count: int) -> bytes:
    return b"".join(json.dumps({"id": f"item-{i:07d}", "prompt": f"prompt number {i}"}).encode() + b"\n"
                    for i in range(count))


def test_jsonl_items_are_made_when_reached_and_digest_like_a_list() -> None:
    data = jsonl(100_000)
    import numpy  # noqa: F401  (imported by the check; its own import is not what is measured)

    tracemalloc.start()
    try:
        loaded = parse_jsonl(data, base_seed=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Besides the caller's bytes: offsets, id hashes and their sort (2.5 MiB); a list of the items took 49.
    assert peak < 8 * 2**20, f"reading 100,000 lines took {peak / 2**20:.1f} MiB besides the file"
    assert len(loaded) == 100_000
    assert loaded[99_999] == Item(index=99_999, id="item-0099999", prompt="prompt number 99999", seed=100_002)
    assert inputs_digest(loaded) == inputs_digest(list(loaded)), "the fingerprint of a JSONL job must not change"


def test_a_repeated_id_far_down_a_long_file_names_both_lines() -> None:
    lines = jsonl(50_000).splitlines()
    lines.insert(40_000, b"")
    lines.append(json.dumps({"id": "item-0012345", "prompt": "again"}).encode())
    with pytest.raises(InputError, match=r"line 50002: duplicate id 'item-0012345' \(first on line 12346\)"):
        parse_jsonl(b"\n".join(lines), base_seed=0)
