"""Start-up phases: the summary of the ranks' records, the progress contract and the operator's status."""

from __future__ import annotations

from datetime import UTC, datetime

from unit.builders import JobBuilder, gang

from kubeinfer_api.progress import Progress, decode, encode
from kubeinfer_api.status import DistributedInferenceStatus, StartupStatus
from kubeinfer_operator.decide import decide
from kubeinfer_operator.observe import observe
from kubeinfer_runtime.startup import RankRecord, describe, summarize

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PHASES = {"rendezvous": 2.0, "fetch": 3.0, "load": 1.5, "warmup": 0.0, "firstItem": 0.5}


def record(rank: int, scale: float, **nbytes: int) -> RankRecord:
    return RankRecord(rank=rank, attempt=1, seconds={k: v * scale for k, v in PHASES.items()}, bytes=nbytes,
                      model_bytes=1000, final=True)


def test_the_slowest_rank_gives_the_phases_and_every_rank_adds_its_bytes() -> None:
    status = summarize([record(0, 1.0, storage=1000), record(1, 2.0, peers=1000), record(2, 1.5, peers=1000)], 1)
    assert status.slowest_rank == 1 and status.ranks_reported == 3 and status.attempt == 1
    assert (status.rendezvous_seconds, status.fetch_seconds, status.load_seconds, status.first_item_seconds) == (
        4.0, 6.0, 3.0, 1.0)
    assert status.total_seconds == 14.0
    assert (status.model_bytes, status.bytes_from_storage, status.bytes_from_peers, status.bytes_from_cache) == (
        1000, 1000, 2000, 0)
    assert "slowest: rank 1" in describe(status) and "= 14.0s" in describe(status)
    assert summarize([], 3) == StartupStatus(attempt=3)


def test_a_tie_names_the_lowest_rank() -> None:
    assert summarize([record(2, 1.0), record(1, 1.0)], 0).slowest_rank == 1


def test_startup_travels_in_the_progress_report_into_the_status() -> None:
    startup = summarize([record(0, 1.0, storage=1000)], 0)
    report = Progress(attempt=0, phase="running", total=4, startup=startup)
    data = encode(report)
    assert '"bytesFromStorage":1000' in data["progress.json"]
    back = decode(data)
    assert back is not None and back.startup == startup
    job = JobBuilder().nodes(2)
    obs = observe([p.running().obj() for p in gang("cats", 2)], 0, {"node-1": True}, data,
                  {"metadata": {"name": "cats-workers"}})
    status = decide(job.spec(), DistributedInferenceStatus(), obs, T0, 1).status
    assert status.startup == startup
    dumped = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["startup"]["fetchSeconds"] == 3.0 and dumped["startup"]["slowestRank"] == 0
    # A report without start-up (an older worker, or before any rank reported) keeps what the status has.
    later = observe([p.running().obj() for p in gang("cats", 2)], 0, {"node-1": True},
                    encode(Progress(attempt=0, phase="running")), {"metadata": {"name": "cats-workers"}})
    assert decide(job.spec(), status, later, T0, 1).status.startup == startup
