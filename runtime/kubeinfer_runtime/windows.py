"""Work as ranges of item indices, not lists of items: what is pending at a million items costs a few
ranges, and an item is made only when a rank reaches it.

A window is items [k*size, (k+1)*size): a batch window (static plan) or a chunk (elastic plan). A
window is open while any of its items is uncommitted; it is then computed whole.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from kubeinfer_runtime.ledger import Entry
from kubeinfer_runtime.strategies.base import Item

Range = tuple[int, int]  # [first, end)


class IndexView(Sequence[Item]):
    """The items of `items` at the index ranges, in order; a slice is another view (nothing is copied)."""

    def __init__(self, items: Sequence[Item], ranges: Iterable[Range]) -> None:
        self.items = items
        self.ranges = [(a, b) for a, b in ranges if b > a]
        self.starts: list[int] = []  # position in the view of each range's first item
        length = 0
        for a, b in self.ranges:
            self.starts.append(length)
            length += b - a
        self.length = length

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, position: int) -> Item: ...
    @overload
    def __getitem__(self, position: slice) -> IndexView: ...
    def __getitem__(self, position: int | slice) -> Item | IndexView:
        if isinstance(position, slice):
            start, stop, step = position.indices(self.length)
            if step != 1:
                raise ValueError("an IndexView slices with step 1 only")
            return IndexView(self.items, self._ranges_between(start, max(start, stop)))
        if position < 0:
            position += self.length
        if not 0 <= position < self.length:
            raise IndexError(position)
        which = bisect.bisect_right(self.starts, position) - 1
        return self.items[self.ranges[which][0] + position - self.starts[which]]

    def __iter__(self) -> Iterator[Item]:
        for a, b in self.ranges:
            for index in range(a, b):
                yield self.items[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(
            x == y for x, y in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def windows(self, size: int) -> list[Range]:
        """The window numbers the view touches, as [first, end) ranges."""
        found: list[Range] = []
        for a, b in self.ranges:
            first, end = a // size, (b - 1) // size + 1
            if found and found[-1][1] >= first:
                found[-1] = (found[-1][0], max(found[-1][1], end))
            else:
                found.append((first, end))
        return found

    def _ranges_between(self, start: int, stop: int) -> list[Range]:
        picked: list[Range] = []
        for (a, b), offset in zip(self.ranges, self.starts, strict=True):
            lo, hi = max(start - offset, 0), min(stop - offset, b - a)
            if lo < hi:
                picked.append((a + lo, a + hi))
        return picked


def window_view(items: Sequence[Item], windows: Iterable[Range], size: int) -> IndexView:
    """The items of the window ranges (the last window may be short)."""
    total = len(items)
    return IndexView(items, [(first * size, min(end * size, total)) for first, end in windows])


def open_windows(done: bytearray, size: int) -> list[Range]:
    """Ranges of the windows holding an item not marked in `done` (one byte per item)."""
    ranges: list[Range] = []
    total = len(done)
    if total and done.find(1) < 0:  # nothing done yet: every window
        return [(0, (total + size - 1) // size)]
    for number in range((total + size - 1) // size):
        if done.find(0, number * size, min((number + 1) * size, total)) < 0:
            continue
        if ranges and ranges[-1][1] == number:
            ranges[-1] = (ranges[-1][0], number + 1)
        else:
            ranges.append((number, number + 1))
    return ranges


def done_marks(indices: Iterable[int], total: int) -> bytearray:
    """One byte per item, 1 where an item is committed (a megabyte at a million items)."""
    done = bytearray(total)
    for index in indices:
        if 0 <= index < total:
            done[index] = 1
    return done


def covers(ranges: list[Range], number: int) -> bool:
    """Whether `number` lies in one of the sorted, disjoint ranges."""
    at = bisect.bisect_right(ranges, (number, float("inf"))) - 1
    return at >= 0 and ranges[at][0] <= number < ranges[at][1]


def plan_windows(entries: Iterable[Entry], total: int, size: int) -> tuple[list[Range], frozenset[str]]:
    """The open windows given the committed entries, and the committed ids inside them (batch-mates that
    are recomputed only to keep their window whole, not written again)."""
    committed = list(entries)
    windows = open_windows(done_marks((e.index for e in committed), total), size)
    return windows, frozenset(e.id for e in committed if covers(windows, e.index // size))
