"""Gang scheduling policy: does this attempt get a PodGroup, and what does the job say about it. Pure.

`spec.scheduling.gang`: Auto uses the cluster's PodGroup API when it is served and otherwise schedules
the workers one by one, saying so once (condition GangScheduling False and an event), never failing
the job; Required fails it where the API is missing; Disabled never creates a PodGroup.
"""

from __future__ import annotations

from datetime import datetime

from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_api.status import DistributedInferenceStatus, Reason
from kubeinfer_operator import conditions
from kubeinfer_operator.builders.podgroup import min_count

UNAVAILABLE = (
    "the cluster does not serve scheduling.k8s.io/v1beta1 PodGroups (kube-apiserver, kube-scheduler and "
    "kube-controller-manager need --feature-gates=GenericWorkload=true, the apiserver also "
    "--runtime-config=scheduling.k8s.io/v1beta1=true)")


def active(spec: DistributedInferenceSpec, served: bool) -> bool:
    """Whether the workers of this attempt join a PodGroup."""
    return served and spec.scheduling.gang != "Disabled"


def refuse(status: DistributedInferenceStatus, spec: DistributedInferenceSpec, served: bool, now: datetime,
           generation: int | None) -> bool:
    """Fail the job (True) when the user demands gang scheduling the cluster cannot give."""
    if served or spec.scheduling.gang != "Required":
        return False
    message = f"spec.scheduling.gang is Required but {UNAVAILABLE}; use gang Auto to run without it"
    conditions.set_condition(status, "Failed", True, Reason.GANG_REQUIRED, message, now, generation)
    conditions.clear(status, "Running", Reason.GANG_REQUIRED, message, now, generation)
    status.completion_time = conditions.iso(now)
    return True


def report(status: DistributedInferenceStatus, spec: DistributedInferenceSpec, served: bool, now: datetime,
           generation: int | None) -> None:
    """The GangScheduling condition (none when the user disabled it)."""
    if spec.scheduling.gang == "Disabled":
        return
    if served:
        conditions.set_condition(status, "GangScheduling", True, Reason.POD_GROUP_CREATED, (
            f"a PodGroup per attempt (minCount {min_count(spec)}): the scheduler binds all the workers or none"),
            now, generation)
        return
    conditions.set_condition(status, "GangScheduling", False, Reason.GANG_UNAVAILABLE,
                             f"{UNAVAILABLE}: the workers are scheduled one by one", now, generation)
