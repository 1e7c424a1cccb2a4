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
#: Conditions whose appearing False is news too (an event says it once).
NEWS_WHEN_FALSE = frozenset({"GangScheduling"})


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to emit after the status write."""

    type: EventType
    reason: str
    message: str


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_now() -> str:
    return iso(datetime.now(UTC))


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


STATE_ORDER: tuple[ConditionType, ...] = ("Failed", "Complete", "Suspended", "Queued", "Restarting", "Running")
#: The one-line message for `kubectl get` is cut here (the condition keeps the whole of it).
SUMMARY_LIMIT = 300


def derive_state(status: DistributedInferenceStatus) -> str:
    """Terminal states win, then Suspended, Queued, Restarting, Running; then Unschedulable (the scheduler
    cannot place the workers) or Pending."""
    for kind in STATE_ORDER:
        if is_true(status, kind):
            return kind
    running = get(status, "Running")
    return "Unschedulable" if running is not None and running.reason == Reason.UNSCHEDULABLE else "Pending"


def summarize(status: DistributedInferenceStatus) -> None:
    """Set `state` and `message` (the message of the condition that decided the state)."""
    status.state = derive_state(status)
    kind: ConditionType = next((k for k in STATE_ORDER if k == status.state), "Running")
    cond = get(status, kind)
    text = " ".join((cond.message if cond is not None else "").split())
    status.message = (text[:SUMMARY_LIMIT - 3] + "...") if len(text) > SUMMARY_LIMIT else (text or None)


def finished(status: DistributedInferenceStatus) -> bool:
    return is_true(status, "Complete") or is_true(status, "Failed")


def _resumed(cond: Condition, before: Condition | None) -> bool:
    return cond.reason == Reason.RESUMED and before is not None and before.status == "True"


def transitions(old: DistributedInferenceStatus, new: DistributedInferenceStatus) -> list[Event]:
    """One event per condition that became True or changed reason while True, plus resumes."""
    events = []
    for cond in new.conditions:
        before = get(old, cond.type)
        if cond.status == "True":
            if before is None or before.status != "True" or before.reason != cond.reason:
                kind: EventType = "Warning" if cond.type in WARNING_TYPES else "Normal"
                events.append(Event(kind, cond.reason, cond.message or cond.type))
        elif _resumed(cond, before) or (cond.type in NEWS_WHEN_FALSE and (before is None
                                                                          or before.reason != cond.reason)):
            events.append(Event("Normal", cond.reason, cond.message))
    return events
