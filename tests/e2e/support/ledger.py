"""What a job's ledger holds, read through the runtime's own Ledger (the way a resume reads it).

Used to prove that items committed before a disruption were not computed again: each keeps the
attempt, rank and bytes it was first committed with.
"""

from __future__ import annotations

import pytest

from e2e.support.cluster import Cluster, Manifest
from kubeinfer_runtime.ledger import Ledger
from kubeinfer_runtime.storage import ObjectStore

Committed = dict[str, tuple[int, int, str]]  # item id -> (attempt, rank, sha256)


def committed(cluster: Cluster, manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> Committed:
    for key, value in cluster.backend.s3_host_env().items():
        monkeypatch.setenv(key, value)
    ledger = Ledger(ObjectStore(manifest["spec"]["output"]["uri"]))
    return {e.id: (e.attempt, e.rank, e.sha256) for e in ledger.entries()}


def final(entries: dict[str, Manifest]) -> Committed:
    """The same view of a finished run's manifest entries."""
    return {i: (int(e["attempt"]), int(e["rank"]), str(e["sha256"])) for i, e in entries.items()}


def recomputed(before: Committed, entries: dict[str, Manifest]) -> list[str]:
    """Items committed before the disruption whose manifest entry is not the one first committed."""
    after = final(entries)
    return sorted(i for i, first in before.items() if after.get(i) != first)
