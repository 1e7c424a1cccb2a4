"""`DistributedInference.spec`: the single source of truth for the CRD schema and for validation.

Field-level bounds and enums become OpenAPI constraints; cross-field rules are CEL
(`x-kubernetes-validations`) so the apiserver rejects a bad spec before the operator sees it. The
same rules are checked in Python (`kubeinfer_api.validation`) for `kubeinfer run` and the operator.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

Quantity = int | str
URI_PATTERN = r"^(s3|gs|az|abfs|hf|file)://.+$|^/.+$"
#: Inputs and outputs live in object storage or on a volume; hf:// serves models only.
STORE_URI_PATTERN = r"^(s3|gs|az|abfs|file)://.+$|^/.+$"


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry; `field_path` makes the apiserver name the field."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class SpecModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ModelCache(SpecModel):
    """Complete models kept across jobs, keyed by URI and version (ETag), published atomically."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("has(self.claimName) != has(self.hostPath)",
            "model.cache: set exactly one of claimName (a PersistentVolumeClaim, ReadWriteMany to share it "
            "between nodes) or hostPath (a node-local directory the cluster admin allows)"),
    ]})
    claim_name: str | None = Field(None, min_length=1, max_length=253,
                                   pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", description=(
                                       "PersistentVolumeClaim in the job's namespace (ReadWriteMany across nodes)."))
    host_path: str | None = Field(None, min_length=2, max_length=1024, pattern=r"^/.+$", description=(
        "A directory on each node (created if missing): one the cluster admin allows (chart value "
        "policies.jobAuthors.allowedCacheHostPaths), in a namespace whose Pod Security level is privileged."))


class ModelSource(SpecModel):
    uri: str = Field(max_length=2048, pattern=URI_PATTERN, description=(
        "Where the model is: s3://, gs://, az://, abfs://, hf://org/name, file:///path or /path (a mounted PVC)."))
    pipeline: str | None = Field(None, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description=(
        "diffusers/transformers class to load with; default: from model_index.json (diffusers), "
        "AutoModelForCausalLM (text-generation)."))
    dtype: Literal["float32", "float16", "bfloat16"] = Field("bfloat16", description="Weights and compute dtype.")
    revision: str = Field("main", max_length=256, description="Branch, tag or commit (hf:// only).")
    credentials_secret: str | None = Field(None, max_length=253, description=(
        "Secret with storage keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...) or HF_TOKEN."))
    cache: ModelCache | None = Field(None, description=(
        "Keep fetched models for later jobs; a job finding its model's version there reads nothing."))


class TaskSpec(SpecModel):
    """What each item computes."""

    type: Literal["text-to-image", "text-generation"] = Field("text-to-image", description=(
        "text-to-image: a diffusers pipeline; text-generation: a transformers causal LM."))
    parameters: dict[str, Any] = Field(default_factory=dict, description=(
        "Arguments of the pipeline call / generate() (e.g. num_inference_steps, height, max_new_tokens)."))
    seed: int = Field(0, ge=0, le=2**31 - 1, description=(
        "Item i uses seed + i (unless its JSONL line sets seed), so outputs do not depend on the number "
        "of workers."))


class InputsSpec(SpecModel):
    """The prompts: exactly one of prompts (inline) or uri (a JSONL file)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("has(self.prompts) != has(self.uri)",
            "set exactly one of inputs.prompts (inline list) or inputs.uri (a JSONL file)"),
    ]})
    prompts: list[str] | None = Field(None, min_length=1, max_length=1000, description=(
        "Inline prompts (1 to 1000; use inputs.uri for more); ids 00000, 00001, ..."))
    uri: str | None = Field(None, max_length=2048, pattern=STORE_URI_PATTERN, description=(
        'JSONL, one item per line: {"id": ..., "prompt": ..., optional per-item parameters and seed}; '
        "s3://, gs://, az://, file:// or a path (not hf://)."))


class PipelineOptions(SpecModel):
    split_points: list[str] = Field(default_factory=list, max_length=64, description=(
        "Module names where stages start (e.g. transformer.h.6), world size - 1 of them; empty = balanced "
        "automatically."))
    num_chunks: int = Field(2, ge=1, le=1024, description="Micro-batches in flight through the pipeline.")
    gather_output: bool = Field(False, description="Outputs written by rank 0 instead of the last stage.")


class DeviceMapOptions(SpecModel):
    placement: Literal["balanced", "auto", "sequential"] = Field("balanced", description=(
        "accelerate device_map placement."))
    max_memory: dict[str, str] = Field(default_factory=dict, description=(
        'Per-device cap, keys a GPU index or cpu, e.g. {"0": "70GiB", "cpu": "200GiB"}.'))
    staged_loading: bool = Field(True, description=(
        "Load text encoders, then the transformer, then the VAE, freeing each stage's memory."))


class ContextOptions(SpecModel):
    ring_degree: int = Field(1, ge=1, le=64, description="Ring attention degree.")
    ulysses_degree: int = Field(1, ge=1, le=64, description="Ulysses degree (must divide the attention heads).")
    attention_backend: Literal["auto", "native", "flash", "_native_flash", "_native_cudnn", "sage"] = Field(
        "auto", description="diffusers attention backend.")


class StrategySpec(SpecModel):
    """How the work is spread over the processes, and each strategy's options."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.type != 'context' || has(self.context)",
            "strategy.context (ringDegree, ulyssesDegree) is required when strategy.type is context"),
        cel("!has(self.context) || self.context.ringDegree * self.context.ulyssesDegree >= 2",
            "strategy.context: ringDegree * ulyssesDegree must be at least 2"),
        cel("!has(self.elastic) || !self.elastic || self.type == 'data'",
            "strategy.elastic applies to type data only (the other strategies need every rank at once)"),
    ]})
    type: Literal["data", "pipeline", "deviceMap", "context", "auto"] = Field("data", description=(
        "Parallelism strategy."))
    batch_size: int = Field(1, ge=1, le=1024, description="Items per pipeline call on one rank.")
    elastic: bool = Field(False, description=(
        "data only: every process claims chunks of the items from the output store instead of a fixed "
        "share, so a dead worker loses only its chunk, the others keep going, and idle workers re-run "
        "the slowest chunks at the end. See docs/concepts/elastic.md."))
    pipeline: PipelineOptions | None = None
    device_map: DeviceMapOptions | None = None
    context: ContextOptions | None = None


#: diffusers 0.42.1's `AttentionBackendName` values (a test keeps them equal to the installed library).
AttentionBackend = Literal[
    "native", "_native_math", "_native_efficient", "_native_flash", "_native_cudnn", "_native_npu", "_native_xla",
    "flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "flex", "sage", "sage_varlen",
    "_sage_qk_int8_pv_fp8_cuda", "_sage_qk_int8_pv_fp8_cuda_sm90", "_sage_qk_int8_pv_fp16_cuda",
    "_sage_qk_int8_pv_fp16_triton", "xformers", "flash_hub", "flash_varlen_hub", "flash_4_hub", "_flash_3_hub",
    "_flash_3_varlen_hub", "aiter_fa2_hub", "sage_hub", "sage_blackwell_hub"]


CompileTarget = Literal["denoiser", "decoder"]


def _denoiser() -> list[CompileTarget]:
    return ["denoiser"]


class CompileOptions(SpecModel):
    """torch.compile of the pipeline's hot modules (the first batch then pays the compilation: warm-up)."""

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode.")
    modules: list[CompileTarget] = Field(default_factory=_denoiser, min_length=1, max_length=2, description=(
        "What to compile: denoiser (the transformer or UNet), decoder (the VAE decoder)."))
    fullgraph: bool = Field(False, description="Fail instead of falling back to eager on a graph break.")


class RuntimeOptions(SpecModel):
    """Compute options applied by every strategy that runs a diffusers pipeline (data, deviceMap, context)."""

    compile: CompileOptions | None = Field(None, description="Compile the denoiser and/or decoder; unset: eager.")
    attention_backend: AttentionBackend | None = Field(None, description=(
        "diffusers attention backend of the denoiser (e.g. _native_flash, flash, sage; some need their package "
        "or a GPU); unset: the library's default (native). For strategy context it is also the context backend; "
        "strategy.context.attentionBackend, if not auto, must then be the same."))


class ResourceRequirements(SpecModel):
    model_config = ConfigDict(alias_generator=None, extra="forbid")
    limits: dict[str, Quantity] = Field(default_factory=dict, description=(
        "Container limits; nvidia.com/gpu is set from gpusPerNode."))
    requests: dict[str, Quantity] = Field(default_factory=dict, description=(
        "Container requests; cpu 500m and memory 1Gi for each of the two you set no request or limit for. "
        "Each process computes with OMP_NUM_THREADS = the cpu request (else limit) / processesPerNode, at least 1 "
        "(set it in env to override)."))


class LocalObjectReference(SpecModel):
    name: str = Field(min_length=1, max_length=253, description="Name of an object in the job's namespace.")


class WorkersSpec(SpecModel):
    """The worker pods."""

    nodes: int = Field(1, ge=1, le=1024, description="Worker pods.")
    min_nodes: int | None = Field(None, ge=1, le=1024, description=(
        "strategy.elastic only: the job runs once this many worker pods run (the others join as capacity "
        "appears), and a gang PodGroup asks the scheduler for this many at once; default: all nodes."))
    gpus_per_node: int = Field(0, ge=0, le=16, description=(
        "nvidia.com/gpu per pod (overrides any GPU value in resources); 0 runs on CPU with gloo."))
    processes_per_node: int | None = Field(None, ge=1, le=64, description=(
        "torchrun processes per pod; default gpusPerNode (1 on CPU and for deviceMap)."))
    image: str | None = Field(None, max_length=512, description="Worker image; default: the chart's workerImage.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(None, description=(
        "Image pull policy; default: the cluster's."))
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16, description=(
        "Secrets (kubernetes.io/dockerconfigjson) for pulling workers.image from a private registry."))
    resources: ResourceRequirements | None = None
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node selector of the pods.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Tolerations of the pods.")
    affinity: dict[str, Any] | None = Field(None, description="Affinity of the pods.")
    priority_class_name: str | None = Field(None, max_length=253, description="PriorityClass of the pods.")
    scheduler_name: str | None = Field(None, max_length=253, description=(
        "Scheduler of the pods, e.g. a gang scheduler of your cluster."))
    env: list[dict[str, Any]] = Field(default_factory=list, description=(
        "Extra EnvVars; each wins over an injected variable of the same name."))
    volumes: list[dict[str, Any]] = Field(default_factory=list, description=(
        "Volumes added to the pod (e.g. a PVC with the model)."))
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list, description=(
        "VolumeMounts added to the worker container."))
    pod_labels: dict[str, str] = Field(default_factory=dict, description="Labels added to the pod template.")
    pod_annotations: dict[str, str] = Field(default_factory=dict, description=(
        "Annotations added to the pod template."))
    shm_size: Quantity = Field("8Gi", description="Size of the memory-backed /dev/shm (NCCL needs > 64Mi).")
    network_policy: bool = Field(True, description=(
        "A NetworkPolicy lets only this job's pods reach its workers (the metrics port stays open); "
        "false: none."))
    termination_grace_period_seconds: int = Field(60, ge=1, le=3600, description=(
        "How long a worker may drain on SIGTERM (preemption, eviction, suspend, delete): it stops taking "
        "items and commits what it finished; also passed to the worker as KUBEINFER_GRACE_SECONDS."))

    @property
    def required(self) -> int:
        """Worker pods the job needs running at once: minNodes for an elastic job, else every one."""
        return self.min_nodes or self.nodes


class RendezvousSpec(SpecModel):
    """How the processes find each other (torch.distributed)."""

    port: int = Field(29500, ge=1024, le=65535, description="Master port on <job>-workers-0.")
    timeout_seconds: int = Field(600, ge=10, le=7200, description=(
        "How long workers wait for the master and for collectives before failing."))
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description=(
        "auto: nccl on GPUs, gloo on CPU; nccl needs gpusPerNode > 0."))


class OutputSpec(SpecModel):
    """Where everything the job writes goes."""

    uri: str = Field(max_length=2048, pattern=STORE_URI_PATTERN, description=(
        "Prefix for outputs: s3://, gs://, az://, file:///path or /path (a volume every pod mounts)."))
    format: Literal["png", "jpeg", "webp", "jsonl"] | None = Field(None, description=(
        "Item format: png, jpeg or webp for text-to-image (default png), jsonl exactly for text-generation."))
    credentials_secret: str | None = Field(None, max_length=253, description=(
        "Secret with storage keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_ENDPOINT_URL, or "
        "GCS/Azure keys); also used to read inputs.uri."))
    endpoint_url: str | None = Field(None, max_length=1024, pattern=r"^https?://.+$", description=(
        "S3-compatible endpoint (MinIO, Ceph, R2); overrides the Secret's AWS_ENDPOINT_URL."))
    contact_sheet: bool = Field(True, description=(
        "Write contact-sheet.png with thumbnails of the first 256 images (text-to-image)."))


FailureAction = Literal["FailJob", "RestartJob", "RestartJobAndIgnoreMaxRestarts"]


class FailureRule(SpecModel):
    """JobSet's failurePolicy.rules, for worker failures: the first rule that matches decides."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("has(self.onReasons) || has(self.onMessagePatterns)",
            "failurePolicy.rules[]: set onReasons, onMessagePatterns or both"),
    ]})
    name: str | None = Field(None, max_length=128, description="Shown in the job's conditions when it matches.")
    action: FailureAction = Field(description=(
        "FailJob: fail now, no restart can fix this; RestartJob: restart the workers, counted against "
        "maxRestarts; RestartJobAndIgnoreMaxRestarts: restart without counting (a disruption)."))
    on_reasons: list[str] | None = Field(None, max_length=32, description=(
        "Failure reasons this rule matches: a worker's own (the CamelCase word before ':' in its termination "
        "message, e.g. ModelError, StorageError) or the operator's (WorkerFailed, PodDeleted, NodeNotReady, "
        "Stalled, RendezvousTimeout, Preempted)."))
    on_message_patterns: list[str] | None = Field(None, max_length=32, description=(
        "Regular expressions (Python syntax) searched in the failure message; with onReasons both must match."))


class FailurePolicy(SpecModel):
    """When a failure restarts the gang, and when the job fails."""

    max_restarts: int = Field(3, ge=0, le=100, description="Gang restarts before the job is Failed.")
    stall_timeout_seconds: int = Field(900, ge=0, le=86400, description=(
        "Restart the gang when nothing advances for this long while Running; 0 disables."))
    startup_timeout_seconds: int = Field(600, ge=0, le=86400, description=(
        "Fail the job (WorkersCannotStart) when a worker waits this long, counted from when it was scheduled, "
        "in a state no restart fixes (ErrImagePull, ImagePullBackOff, InvalidImageName, "
        "CreateContainerConfigError, CreateContainerError); 0 disables."))
    rules: list[FailureRule] = Field(default_factory=list, max_length=16, description=(
        "Checked in order before the built-in rules (permanent: model missing, access denied, invalid input "
        "fail at once; disruptions restart without counting; anything else restarts, counted)."))


class SchedulingSpec(SpecModel):
    """Where and how the workers are placed: gang scheduling and one topology domain."""

    gang: Literal["Auto", "Required", "Disabled"] = Field("Auto", description=(
        "Auto: gang-schedule the workers (a scheduling.k8s.io/v1beta1 PodGroup: all bound or none) where the "
        "cluster serves the API, otherwise schedule them one by one and say so; Required: fail the job "
        "where the cluster cannot; Disabled: never create a PodGroup."))
    topology_key: str | None = Field(None, max_length=317, pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9_.-]+$", description=(
        "A node label (e.g. topology.kubernetes.io/zone): every worker lands on nodes with the same value "
        "(PodGroup topology constraint, Kueue topology request or pod affinity, whichever the cluster has)."))


class SuccessPolicy(SpecModel):
    """When the job counts as Complete."""

    min_succeeded_ratio: float = Field(1.0, ge=0.0, le=1.0, description=(
        "Fraction of items that must succeed for the job to be Complete."))


IMMUTABLE = "spec.{0} is immutable; delete and recreate the job (committed outputs are skipped)"
_WORLD_SIZE = ("self.workers.nodes * (has(self.workers.processesPerNode) ? self.workers.processesPerNode"
               " : (self.workers.gpusPerNode > 0 && self.strategy.type != 'deviceMap'"
               " ? self.workers.gpusPerNode : 1))")


class DistributedInferenceSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel(f"!has(self.strategy.context) || ({_WORLD_SIZE}) % (self.strategy.context.ringDegree"
            " * self.strategy.context.ulyssesDegree) == 0",
            "strategy.context: ringDegree * ulyssesDegree must divide the world size "
            "(workers.nodes * processes per node)", ".strategy.context"),
        cel("!(self.rendezvous.backend == 'nccl' && self.workers.gpusPerNode == 0)",
            "rendezvous.backend nccl needs GPUs: set workers.gpusPerNode > 0 or backend gloo/auto",
            ".rendezvous.backend"),
        cel(f"self.strategy.type != 'pipeline' || ({_WORLD_SIZE}) >= 2",
            "strategy pipeline needs at least 2 processes (workers.nodes * processes per node)",
            ".strategy.type"),
        cel("!has(self.workers.minNodes) || (has(self.strategy.elastic) && self.strategy.elastic)",
            "workers.minNodes applies to elastic data jobs only (strategy.elastic: true); the other strategies "
            "need every worker at once", ".workers.minNodes"),
        cel("!has(self.workers.minNodes) || self.workers.minNodes <= self.workers.nodes",
            "workers.minNodes must be at most workers.nodes", ".workers.minNodes"),
        cel("self.strategy.type != 'pipeline' || self.task.type == 'text-generation'",
            "strategy pipeline runs transformers models: use task.type text-generation", ".strategy.type"),
        cel("self.strategy.type != 'context' || self.task.type == 'text-to-image'",
            "strategy context runs diffusers transformers: use task.type text-to-image", ".strategy.type"),
        cel("!has(self.output.format) || (self.task.type == 'text-generation') == (self.output.format == 'jsonl')",
            "output.format: use jsonl for text-generation and png, jpeg or webp for text-to-image",
            ".output.format"),
        cel("self.strategy.type != 'deviceMap' || !has(self.workers.processesPerNode)"
            " || self.workers.processesPerNode == 1",
            "strategy deviceMap runs one process per pod: remove workers.processesPerNode or set it to 1",
            ".workers.processesPerNode"),
        cel("!has(self.runtime) || self.task.type == 'text-to-image'"
            " || (!has(self.runtime.compile) && !has(self.runtime.attentionBackend))",
            "runtime.compile and runtime.attentionBackend apply to diffusers pipelines: use task.type text-to-image",
            ".runtime"),
        cel("!has(self.runtime) || !has(self.runtime.attentionBackend) || !has(self.strategy.context)"
            " || self.strategy.context.attentionBackend == 'auto'"
            " || self.strategy.context.attentionBackend == self.runtime.attentionBackend",
            "runtime.attentionBackend and strategy.context.attentionBackend differ: set the backend once, in "
            "runtime.attentionBackend, and leave strategy.context.attentionBackend auto", ".runtime.attentionBackend"),
    ]})

    model: ModelSource
    task: TaskSpec = Field(default_factory=TaskSpec)
    inputs: InputsSpec
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions)
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    rendezvous: RendezvousSpec = Field(default_factory=RendezvousSpec)
    output: OutputSpec
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    success_policy: SuccessPolicy = Field(default_factory=SuccessPolicy)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    suspend: bool = Field(False, description="true removes the workers and keeps the job; false resumes it.")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, description=(
        "Delete the job this long after it is Complete or Failed (outputs stay); default: never."))


#: Fields that may not change after creation (CEL `self == oldSelf` on each).
IMMUTABLE_FIELDS = ("model", "task", "inputs", "strategy", "runtime", "workers", "rendezvous", "output",
                    "scheduling")
