"""Completion: the workers report `phase: complete`; successPolicy decides Complete or Failed.

Worker pods restart forever under a StatefulSet (restartPolicy Always), so completion is the
operator's call: it ends the job and the caller tears the workers down, keeping job, status,
progress ConfigMap and outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kubeinfer_api.progress import Progress
from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_api.status import ConditionType, DistributedInferenceStatus, Reason
from kubeinfer_operator import conditions


@dataclass(frozen=True)
class Outcome:
    complete: bool
    reason: str
    message: str


def judge(spec: DistributedInferenceSpec, report: Progress | None) -> Outcome | None:
    """None until the workers say the job is complete. `succeeded` counts every committed item."""
    if report is None or report.phase != "complete":
        return None
    total, ok = report.total, report.succeeded
    ratio = ok / total if total else 1.0
    wanted = spec.success_policy.min_succeeded_ratio
    if ratio >= wanted:
        return Outcome(True, Reason.ITEMS_COMPLETE, f"{ok} of {total} items succeeded ({report.failed} failed)")
    first = f"; {report.message}" if report.message else ""
    return Outcome(False, Reason.TOO_MANY_FAILED_ITEMS, (
        f"{ok} of {total} items succeeded ({ratio:.3f} < successPolicy.minSucceededRatio {wanted}){first}. "
        "Failed item ids are in _FAILED under the output; re-create the job to retry only them"))


def apply(status: DistributedInferenceStatus, outcome: Outcome, now: datetime, generation: int | None) -> None:
    kind: ConditionType = "Complete" if outcome.complete else "Failed"
    conditions.set_condition(status, kind, True, outcome.reason, outcome.message, now, generation)
    conditions.clear(status, "Running", outcome.reason, outcome.message, now, generation)
    conditions.clear(status, "Restarting", outcome.reason, outcome.message, now, generation)
    status.completion_time = conditions.iso(now)
