"""ttlSecondsAfterFinished: delete a Complete or Failed job (and, by ownership, its children)."""

from __future__ import annotations

from datetime import datetime

from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_api.status import DistributedInferenceStatus
from kubeinfer_operator import conditions


def seconds_left(ttl: int | None, status: DistributedInferenceStatus, now: datetime) -> float | None:
    """None: never deleted (not finished, or no TTL); <= 0: delete now."""
    if ttl is None or not conditions.finished(status):
        return None
    finished_at = conditions.parse_time(status.completion_time) or now
    return (finished_at - now).total_seconds() + ttl


def spec_ttl(spec: DistributedInferenceSpec | None, raw_spec: dict[str, object]) -> int | None:
    """The TTL even when the spec is invalid (an InvalidSpec job still expires)."""
    if spec is not None:
        return spec.ttl_seconds_after_finished
    raw = raw_spec.get("ttlSecondsAfterFinished")
    return raw if isinstance(raw, int) and raw >= 0 else None
