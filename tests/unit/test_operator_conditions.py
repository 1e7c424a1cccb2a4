"""Conditions: transition times move only on flips, state is derived, events follow transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubeinfer_api.status import DistributedInferenceStatus
from kubeinfer_operator import conditions

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_transition_time_moves_only_when_status_flips() -> None:
    status = DistributedInferenceStatus()
    conditions.set_condition(status, "Running", True, "WorkersRunning", "2 of 2", T0, 1)
    conditions.set_condition(status, "Running", True, "WorkersRunning", "still", T0 + timedelta(minutes=1), 2)
    (cond,) = status.conditions
    assert cond.last_transition_time == "2026-01-01T00:00:00Z" and cond.message == "still"
    assert cond.observed_generation == 2
    conditions.set_condition(status, "Running", False, "WorkersPending", "", T0 + timedelta(minutes=2), 2)
    assert status.conditions[0].last_transition_time == "2026-01-01T00:02:00Z"


def test_conditions_keep_a_stable_order_and_one_per_type() -> None:
    status = DistributedInferenceStatus()
    for kind in ("Failed", "Created", "Running", "Created"):
        conditions.set_condition(status, kind, True, "R", "", T0, 1)  # type: ignore[arg-type]
    assert [c.type for c in status.conditions] == ["Created", "Running", "Failed"]


def test_clear_does_not_add_absent_conditions() -> None:
    status = DistributedInferenceStatus()
    conditions.clear(status, "Restarting", "X", "", T0, 1)
    assert status.conditions == []


@pytest.mark.parametrize(("true", "state"), [
    ((), "Pending"),
    (("Created",), "Pending"),
    (("Created", "Running"), "Running"),
    (("Created", "Restarting"), "Restarting"),
    (("Created", "Suspended"), "Suspended"),
    (("Created", "Running", "Complete"), "Complete"),
    (("Created", "Complete", "Failed"), "Failed"),
])
def test_derived_state(true: tuple[str, ...], state: str) -> None:
    status = DistributedInferenceStatus()
    for kind in true:
        conditions.set_condition(status, kind, True, "R", "", T0, 1)  # type: ignore[arg-type]
    assert conditions.derive_state(status) == state


def test_events_for_new_true_conditions_and_reason_changes_only() -> None:
    old = DistributedInferenceStatus()
    conditions.set_condition(old, "Running", True, "WorkersRunning", "", T0, 1)
    new = old.model_copy(deep=True)
    assert conditions.transitions(old, new) == []
    conditions.set_condition(new, "Restarting", True, "WorkerFailed", "boom", T0, 1)
    conditions.set_condition(new, "Running", False, "WorkerFailed", "boom", T0, 1)
    assert conditions.transitions(old, new) == [conditions.Event("Warning", "WorkerFailed", "boom")]
    newer = new.model_copy(deep=True)
    conditions.set_condition(newer, "Restarting", True, "Stalled", "slow", T0, 1)
    assert [e.reason for e in conditions.transitions(new, newer)] == ["Stalled"]
