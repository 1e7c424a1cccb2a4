"""Progress: counts the ranks publish, phases published at once, the operator's contract, never fatal."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from kubeinfer_api import progress as contract
from kubeinfer_runtime.ledger import Ledger
from kubeinfer_runtime.progress import Reporter, configmap_sink, progress_line
from kubeinfer_runtime.storage import ObjectStore


class Collect:
    """A sink that keeps what it is given (the ConfigMap sink sends the same objects to the apiserver)."""

    def __init__(self) -> None:
        self.reports: list[contract.Progress] = []

    def publish(self, report: contract.Progress) -> None:
        self.reports.append(report)


def test_reports_phases_at_once_and_counts_what_the_ranks_publish(tmp_path: Path) -> None:
    ledger = Ledger(ObjectStore(str(tmp_path)))
    sink = Collect()
    reporter = Reporter(attempt=2, sink=sink, interval=3600)  # no background refresh in this test
    reporter.start()
    reporter.track(lambda: ledger.counts("run", world_size=2))
    reporter.set(phase="loading", total=4, skipped=1)  # one item committed by an earlier attempt
    reporter.set(phase="running")
    ledger.write_counts("run", 0, succeeded=2, failed=0)
    ledger.write_counts("run", 1, succeeded=0, failed=1)
    reporter.refresh()
    reporter.publish()
    assert [r.phase for r in sink.reports] == ["starting", "loading", "running", "running"]
    last = contract.decode(contract.encode(sink.reports[-1]))  # what the operator reads back
    assert last is not None
    assert (last.attempt, last.total, last.succeeded, last.failed, last.skipped) == (2, 4, 3, 1, 1)
    assert last.items_per_second > 0 and last.eta_seconds == 0
    reporter.close("complete")
    assert sink.reports[-1].phase == "complete"


def test_a_counts_read_in_flight_at_close_never_overwrites_the_last_report() -> None:
    """The background refresh reads older counts (15) while the job closes with 24: the last report the
    operator sees must say 24, or successPolicy fails a job that wrote every output (seen in CI)."""
    sink = Collect()
    complete_sent, reading = threading.Event(), threading.Event()
    calls = 0

    def counts() -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls > 1:
            return 24, 0
        reading.set()
        complete_sent.wait(timeout=1)  # a slow read: it returns after the close, if the close does not wait
        return 15, 0

    class Watch(Collect):
        def publish(self, report: contract.Progress) -> None:
            sink.publish(report)
            if report.phase == "complete":
                complete_sent.set()

    reporter = Reporter(attempt=0, sink=Watch(), interval=0.01)
    reporter.track(counts)
    reporter.set(total=24)
    reporter.start()
    assert reading.wait(timeout=30), "the background refresh never ran"
    reporter.close("complete")
    reporter.thread.join(timeout=30)
    last = sink.reports[-1]
    assert (last.phase, last.succeeded) == ("complete", 24), [(r.phase, r.succeeded) for r in sink.reports]


def test_the_last_report_carries_the_ledgers_counts() -> None:
    sink = Collect()
    reporter = Reporter(attempt=0, sink=sink, interval=3600)
    reporter.track(lambda: (3, 0))  # this run's counters lag behind the ledger
    reporter.set(total=10, skipped=2)
    reporter.set(phase="running")
    reporter.close("complete", counts=(9, 1))
    last = sink.reports[-1]
    assert (last.succeeded, last.failed) == (9, 1)
    # A job done before the first refresh: its last line gives its rate, not "0.00 items/s ETA ?" (seen on a GPU).
    assert last.items_per_second > 0 and last.eta_seconds == 0


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
