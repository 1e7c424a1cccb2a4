"""Conditions as the state: set them with correct transition times, derive `state`, list transitions.

A condition's lastTransitionTime moves only when its status flips; reason and message may change in
place. `state` is a one-word summary for `kubectl get`, derived here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from kubeinfer_api.status import CONDITION_TYPES, Condition, ConditionType, DistributedInferenceStatus, Reason

EventType = Literal["Normal", "Warning"]
#: Conditions whose True-transition is bad news (Warning events).
WARNING_TYPES = frozenset({"Failed", "Restarting"})


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to emit after the status write."""

    type: EventType
    reason: str
    message: str


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def get(status: DistributedInferenceStatus, kind: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == kind), None)


def is_true(status: DistributedInferenceStatus, kind: ConditionType) -> bool:
    cond = get(status, kind)
    return cond is not None and cond.status == "True"


def set_condition(status: DistributedInferenceStatus, kind: ConditionType, value: bool, reason: str,
                  message: str, now: datetime, generation: int | None) -> None:
    """Upsert one condition in place, keeping lastTransitionTime unless the status flips."""
    wanted = "True" if value else "False"
    old = get(status, kind)
    since = old.last_transition_time if old is not None and old.status == wanted else iso(now)
    new = Condition(type=kind, status=wanted, reason=reason, message=message[:32768],
                    last_transition_time=since, observed_generation=generation)
    others = [c for c in status.conditions if c.type != kind]
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    status.conditions = sorted([*others, new], key=lambda c: order[c.type])


def clear(status: DistributedInferenceStatus, kind: ConditionType, reason: str, message: str,
          now: datetime, generation: int | None) -> None:
    """Set a condition False only if it exists (absent already means False; avoids noise)."""
    if get(status, kind) is not None:
        set_condition(status, kind, False, reason, message, now, generation)


def derive_state(status: DistributedInferenceStatus) -> str:
    """Terminal states win, then Suspended, Restarting, Running; Pending until workers run."""
    order: tuple[ConditionType, ...] = ("Failed", "Complete", "Suspended", "Restarting", "Running")
    for kind in order:
        if is_true(status, kind):
            return kind
    return "Pending"


def finished(status: DistributedInferenceStatus) -> bool:
    return is_true(status, "Complete") or is_true(status, "Failed")


def transitions(old: DistributedInferenceStatus, new: DistributedInferenceStatus) -> list[Event]:
    """One event per condition that became True or changed reason while True, plus resumes."""
    events = []
    for cond in new.conditions:
        before = get(old, cond.type)
        if cond.status == "True":
            if before is None or before.status != "True" or before.reason != cond.reason:
                kind: EventType = "Warning" if cond.type in WARNING_TYPES else "Normal"
                events.append(Event(kind, cond.reason, cond.message or cond.type))
        elif cond.reason == Reason.RESUMED and before is not None and before.status == "True":
            events.append(Event("Normal", cond.reason, cond.message))
    return events
