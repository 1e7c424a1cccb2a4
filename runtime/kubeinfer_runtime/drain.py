"""SIGTERM drains a data-parallel rank: it stops taking items, commits what it finished, and exits.

A pod gets SIGTERM when it is preempted, evicted, drained off its node, suspended or deleted, and
`terminationGracePeriodSeconds` later SIGKILL. A rank that dies at once loses the outputs it finished
but has not recorded yet (records are written every few seconds); a drained rank records them, and
its error (`Drained: SIGTERM; ...`) becomes the pod's termination message, which the operator reads
as a disruption, not a crash. Only `data` ranks drain: the other strategies' ranks wait for each
other in collectives, so one stopping early would leave the rest hanging until they are killed.
"""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()


class Drained(Exception):
    """The rank stopped on SIGTERM after committing what it had finished (the message names the count)."""


def install() -> None:
    """From now on SIGTERM asks this process to drain instead of ending it (main thread only)."""
    signal.signal(signal.SIGTERM, lambda *_: _requested.set())


def requested() -> bool:
    return _requested.is_set()


def stopped(committed: int) -> Drained:
    return Drained(f"SIGTERM; {committed} items committed before stopping, the rest left for the next attempt")
