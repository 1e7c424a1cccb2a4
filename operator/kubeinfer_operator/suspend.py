"""`suspend: true` removes the workers and keeps the job; `false` brings them back.

Suspending starts a new attempt, so pods of the suspended attempt that are still terminating when
the job resumes are stale (deleted) rather than mistaken for failed workers; committed outputs are
skipped by the runtime on resume.
"""

from __future__ import annotations

from datetime import datetime

from kubeinfer_api.status import DistributedInferenceStatus, Reason
from kubeinfer_operator import conditions

SUSPENDED_MESSAGE = "spec.suspend is true: workers removed; set it to false to resume"
RESUMED_MESSAGE = "spec.suspend is false: workers recreated; committed outputs are skipped"


def apply_suspend(status: DistributedInferenceStatus, now: datetime, generation: int | None) -> None:
    if not conditions.is_true(status, "Suspended"):
        status.attempt += 1
    conditions.set_condition(status, "Suspended", True, Reason.SUSPENDED, SUSPENDED_MESSAGE, now, generation)
    conditions.clear(status, "Running", Reason.SUSPENDED, SUSPENDED_MESSAGE, now, generation)
    conditions.clear(status, "Restarting", Reason.SUSPENDED, SUSPENDED_MESSAGE, now, generation)


def apply_resume(status: DistributedInferenceStatus, now: datetime, generation: int | None) -> None:
    if conditions.is_true(status, "Suspended"):
        conditions.set_condition(status, "Suspended", False, Reason.RESUMED, RESUMED_MESSAGE, now, generation)
