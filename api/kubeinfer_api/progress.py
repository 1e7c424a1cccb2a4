"""The progress contract between workers (writers) and the operator (reader).

Rank 0 of the current attempt patches ConfigMap `<job>-progress`, key `progress.json`, at a bounded
rate. The operator turns it into `status.progress`, `status.plan`, `status.output` and `status.startup`, and treats
`phase: complete` as the end of the job (worker pods restart forever under a StatefulSet).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, ValidationError

from kubeinfer_api.spec import SpecModel
from kubeinfer_api.status import OutputStatus, Plan, StartupStatus

PROGRESS_KEY = "progress.json"
Phase = Literal["starting", "loading", "running", "finalizing", "complete", "failed"]


class Progress(SpecModel):
    attempt: int = Field(ge=0)
    phase: Phase
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = Field(0, description="Items already committed by an earlier attempt.")
    items_per_second: float = 0.0
    eta_seconds: int | None = None
    updated_at: str = Field(default_factory=lambda: now_iso())
    plan: Plan | None = None
    output: OutputStatus | None = None
    message: str = ""
    startup: StartupStatus | None = None

    @property
    def done(self) -> int:
        return self.succeeded + self.failed


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(progress: Progress) -> dict[str, str]:
    """ConfigMap `data` for a progress report."""
    return {PROGRESS_KEY: progress.model_dump_json(by_alias=True, exclude_none=True)}


def decode(data: dict[str, str] | None) -> Progress | None:
    """The report in a ConfigMap's `data`, or None when absent or unreadable (never crash the operator)."""
    raw = (data or {}).get(PROGRESS_KEY)
    if not raw:
        return None
    try:
        return Progress.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None
