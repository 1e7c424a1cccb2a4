"""The order xdist's `loadgroup` scheduler hands tests out in: it sends work units in collection order, so
the collection order is the run's schedule (tests/conftest.py applies it, with xdist's own reordering off).

A `serial` test has the shared cluster alone (shared.access): an e2e test queued on another worker meanwhile
only waits, and so the CPUs idled (383 idle CPU-seconds in an 18-minute run on 2 cores). So the serial tests
are one unit, queued first, while the other workers build the images and run the runtime tests, which do not
use the shared cluster; then the e2e tests: groups (the longest units) first, then the tests marked `long`
(a minute of waiting on killed, evicted and replaced pods: a run that ends on one of them ends on one worker
while the others idle), longest first by the seconds the mark gives, then the other e2e tests; the quick unit
tests last.
"""

from __future__ import annotations

import pytest

from e2e.support.shared import SERIAL_MARK

#: The xdist group of every `serial` test: one worker runs them one after another.
SERIAL_GROUP = "serial"


def group_of(item: pytest.Item) -> str | None:
    """The item's xdist group: SERIAL_GROUP for a serial test, else its `xdist_group` marks joined."""
    if item.get_closest_marker(SERIAL_MARK) is not None:
        return SERIAL_GROUP
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in item.iter_markers("xdist_group")})
    return "_".join(groups) or None


def queue_order(items: list[pytest.Item]) -> list[pytest.Item]:
    """`items` in schedule order (see the module docstring); collection order within each rank and length."""

    def rank(item: pytest.Item) -> int:
        group, path = group_of(item), item.nodeid
        if group == SERIAL_GROUP:
            return 0
        if item.get_closest_marker("images") is not None:
            return 1
        if path.startswith("tests/runtime/"):
            return 2
        if path.startswith("tests/e2e/"):
            return 3 if group else 4 if item.get_closest_marker("long") is not None else 5
        return 6

    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("long")
        return float(mark.kwargs.get("seconds", 0)) if mark is not None else 0.0

    return sorted(items, key=lambda item: (rank(item), -seconds(item)))
