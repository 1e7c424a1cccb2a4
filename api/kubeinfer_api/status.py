"""`DistributedInference.status`: conditions, reasons and the observed fields.

Conditions are the state (no phase machine); `state` is a one-word summary derived from them for
`kubectl get`. Every reason is a documented constant (see README, "Conditions").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubeinfer_api.spec import SpecModel

ConditionType = Literal["Created", "GangScheduling", "Queued", "Running", "Restarting", "Complete", "Failed",
                        "Suspended"]
CONDITION_TYPES: tuple[ConditionType, ...] = (
    "Created", "GangScheduling", "Queued", "Running", "Restarting", "Complete", "Failed", "Suspended")


class Reason:
    """CamelCase reasons carried by conditions and events."""

    CHILDREN_CREATED = "ChildrenCreated"
    WORKERS_RUNNING = "WorkersRunning"
    WORKERS_PENDING = "WorkersPending"
    WORKER_FAILED = "WorkerFailed"
    POD_DELETED = "PodDeleted"
    POD_EVICTED = "PodEvicted"
    NODE_NOT_READY = "NodeNotReady"
    STALLED = "Stalled"
    WORKERS_CANNOT_START = "WorkersCannotStart"
    RENDEZVOUS_TIMEOUT = "RendezvousTimeout"
    MAX_RESTARTS_EXCEEDED = "MaxRestartsExceeded"
    INVALID_SPEC = "InvalidSpec"
    ITEMS_COMPLETE = "ItemsComplete"
    TOO_MANY_FAILED_ITEMS = "TooManyFailedItems"
    SUSPENDED = "JobSuspended"
    RESUMED = "JobResumed"
    UNSCHEDULABLE = "Unschedulable"
    POD_GROUP_CREATED = "PodGroupCreated"
    GANG_UNAVAILABLE = "GangSchedulingUnavailable"
    GANG_REQUIRED = "GangSchedulingRequired"
    PERMANENT_FAILURE = "PermanentFailure"
    PREEMPTED = "Preempted"
    WAITING_FOR_ADMISSION = "WaitingForAdmission"
    ADMITTED = "Admitted"


class Condition(SpecModel):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=128)
    message: str = Field("", max_length=32768)
    last_transition_time: str
    observed_generation: int | None = None


class Plan(SpecModel):
    strategy: str
    world_size: int
    nodes: int
    processes_per_node: int
    groups: int = Field(description="Data-parallel replicas (a context group or a pipeline counts once).")
    group_size: int
    backend: Literal["nccl", "gloo"]
    explanation: str = ""


class ProgressStatus(SpecModel):
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    items_per_second: float = 0.0
    eta_seconds: int | None = None
    percent: int = 0
    phase: str = ""
    updated_at: str | None = None


class OutputStatus(SpecModel):
    uri: str
    manifest: str | None = None
    objects: int = 0
    bytes: int = 0


class StartupStatus(SpecModel):
    """Where the start-up time went: the phases of the slowest rank (the one whose first item came last)
    and the model bytes every pod read, by source. Filled while the attempt starts; see docs "Cold start"."""

    attempt: int = 0
    ranks_reported: int = Field(0, description="Ranks that reported their start-up so far.")
    slowest_rank: int | None = Field(None, description="Global rank whose phases are shown.")
    rendezvous_seconds: float = Field(0.0, description="Container start until the group formed and the work "
                                      "was shared (includes image start-up, imports and waiting for peers).")
    fetch_seconds: float = Field(0.0, description="Waiting for the model files after rendezvous.")
    load_seconds: float = Field(0.0, description="Loading the model to the device (strategy load).")
    warmup_seconds: float = Field(0.0, description="Warm-up and compilation (spec.runtime.compile).")
    first_item_seconds: float = Field(0.0, description="From ready to the first finished item.")
    total_seconds: float = Field(0.0, description="Container start to the first item (sum of the phases).")
    download_seconds: float = Field(0.0, description="The longest model download of a pod; it starts with the "
                                    "container, so it overlaps the rendezvous (fetch is only the wait after it).")
    model_bytes: int = Field(0, description="Size of the model's files.")
    bytes_from_storage: int = Field(0, description="Model bytes the job read from object storage (all pods).")
    bytes_from_peers: int = Field(0, description="Model bytes pods received from other pods of the job.")
    bytes_from_cache: int = Field(0, description="Model bytes found complete in the model cache.")


class FirstFailure(SpecModel):
    pod: str
    container: str | None = None
    exit_code: int | None = None
    reason: str
    message: str = Field("", max_length=4096)
    attempt: int = 0
    time: str | None = None


class DistributedInferenceStatus(SpecModel):
    observed_generation: int | None = None
    state: str | None = Field(None, description="One-word summary of the conditions, for kubectl get.")
    message: str | None = Field(None, max_length=1024, description=(
        "Why the job is in its state (the message of the condition that decided it), for kubectl get."))
    conditions: list[Condition] = Field(default_factory=list)
    plan: Plan | None = None
    progress: ProgressStatus | None = None
    attempt: int = 0
    restarts: int = 0
    replaced_pods: list[str] = Field(default_factory=list, description=(
        "UIDs of the latest worker pods replaced alone (strategy.elastic), so one failure is counted once."))
    output: OutputStatus | None = None
    first_failure: FirstFailure | None = None
    startup: StartupStatus | None = None
    start_time: str | None = None
    completion_time: str | None = None
