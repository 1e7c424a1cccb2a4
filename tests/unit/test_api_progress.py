"""The progress contract round-trips and never crashes the reader."""

from __future__ import annotations

from kubeinfer_api.progress import PROGRESS_KEY, Progress, decode, encode


def test_round_trip() -> None:
    report = Progress(attempt=2, phase="running", total=10, succeeded=4, failed=1, items_per_second=1.5)
    back = decode(encode(report))
    assert back is not None and back.attempt == 2 and back.done == 5 and back.items_per_second == 1.5
    assert '"itemsPerSecond"' in encode(report)[PROGRESS_KEY]


def test_garbage_reads_as_nothing() -> None:
    assert decode(None) is None
    assert decode({}) is None
    assert decode({PROGRESS_KEY: "{not json"}) is None
    assert decode({PROGRESS_KEY: '{"phase": "bogus", "attempt": 0}'}) is None
