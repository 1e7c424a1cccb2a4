"""The Kueue Workloads the operator created, watched (a kopf index) only when the Kueue integration is on:
without the chart's Kueue RBAC a watch would be refused, and kopf would hold every handler back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from kubeinfer_api.naming import COMPONENT_LABEL, JOB_LABEL
from kubeinfer_operator.builders.common import COMPONENT_QUEUE
from kubeinfer_operator.handlers import snapshot, wake

GROUP, VERSION, PLURAL = "kueue.x-k8s.io", "v1beta2", "workloads"
INDEX = "kueue_workloads"


@kopf.on.startup()
def watch_only_ours(*, settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.label_selectors[GROUP, VERSION, PLURAL] = f"{COMPONENT_LABEL}={COMPONENT_QUEUE}"


@kopf.index(GROUP, VERSION, PLURAL, labels={COMPONENT_LABEL: COMPONENT_QUEUE})
def kueue_workloads(*, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
    """The Workload as a pass reads it: metadata, spec.active and status (admission and conditions)."""
    slim = snapshot(body)
    slim["spec"] = {"active": (body.get("spec") or {}).get("active", True)}
    return {(namespace or "", labels.get(JOB_LABEL, "")): slim}


@kopf.on.event(GROUP, VERSION, PLURAL, labels={COMPONENT_LABEL: COMPONENT_QUEUE})
async def workload_changed(*, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any) -> None:
    """Admission, eviction and requeueing wake the job's loop at once (admission latency)."""
    wake(memo, namespace, labels.get(JOB_LABEL), urgent=True)
