"""Progress: counts from the ledger, phases published at once, the operator's contract, never fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeinfer_api import progress as contract
from kubeinfer_runtime.ledger import Entry, Ledger
from kubeinfer_runtime.progress import Reporter, configmap_sink, progress_line
from kubeinfer_runtime.storage import ObjectStore
from kubeinfer_runtime.strategies.base import Item


class Collect:
    """A sink that keeps what it is given (the ConfigMap sink sends the same objects to the apiserver)."""

    def __init__(self) -> None:
        self.reports: list[contract.Progress] = []

    def publish(self, report: contract.Progress) -> None:
        self.reports.append(report)


def commit(ledger: Ledger, index: int) -> None:
    ledger.commit(Entry(id=f"{index:05d}", index=index, key=f"items/{index:05d}.png", bytes=1, sha256="x",
                        seed=index, rank=0, attempt=0, seconds=0.1))


def test_reports_phases_at_once_and_counts_from_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger(ObjectStore(str(tmp_path)))
    sink = Collect()
    reporter = Reporter(ledger, attempt=2, sink=sink, interval=3600)  # no background refresh in this test
    reporter.start()
    reporter.set(phase="loading", total=4, skipped=1)
    commit(ledger, 0)  # committed by an earlier attempt
    reporter.set(phase="running")
    commit(ledger, 1)
    commit(ledger, 2)
    ledger.fail(Item(index=3, id="00003", prompt="p", seed=3), "ValueError: x", rank=1, attempt=2)
    reporter.refresh()
    reporter.publish()
    assert [r.phase for r in sink.reports] == ["starting", "loading", "running", "running"]
    last = contract.decode(contract.encode(sink.reports[-1]))  # what the operator reads back
    assert last is not None
    assert (last.attempt, last.total, last.succeeded, last.failed, last.skipped) == (2, 4, 3, 1, 1)
    assert last.items_per_second > 0 and last.eta_seconds == 0
    reporter.close("complete")
    assert sink.reports[-1].phase == "complete"


def test_progress_line() -> None:
    assert progress_line(5, 10, 2.5, 2, 1) == "[##########..........] 5/10 items (1 failed) 2.50 items/s ETA 00:00:02"
    assert progress_line(0, 0, 0.0, None, 0).endswith("ETA ?")


def test_configmap_reporting_is_opt_in_and_never_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBEINFER_PROGRESS", "auto")
    assert configmap_sink("job", "ns") is None, "outside a pod: logs only"
    monkeypatch.setenv("KUBEINFER_PROGRESS", "configmap")
    assert configmap_sink("job", "ns") is None, "no in-cluster config: warn and run on"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBEINFER_PROGRESS", "off")
    assert configmap_sink("job", "ns") is None
