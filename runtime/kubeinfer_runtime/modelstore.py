"""Model sources: a path or file:// (a mounted PVC), s3:// (any S3-compatible store), gs://, az://, hf://.

Remote models are fetched once per pod (or once per cache, with spec.model.cache) into a cache
entry keyed by URI and version (`modelio.cache`): every process takes the entry's file lock, the
first one fetches with parallel ranged reads (`modelio.ranged`), each part pinned to the listed
ETag, and publishes the folder atomically; the others find it complete. A later run with the same
listing reuses it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from kubeinfer_api.jobconfig import JobConfig
from kubeinfer_api.naming import MODEL_CACHE_ENV
from kubeinfer_api.spec import ModelSource
from kubeinfer_runtime import startup
from kubeinfer_runtime.modelio import prefetch
from kubeinfer_runtime.modelio.local import read_ahead
from kubeinfer_runtime.modelio.remote import EmptyModel, Fetched, fetch_remote

log = logging.getLogger(__name__)
FIELD = "spec.model.uri"


class ModelError(ValueError):
    """A model that cannot be used as specified; the message names the field."""


def cache_root() -> Path:
    """The pod's own model folder (an emptyDir in a pod; ~/.cache/kubeinfer/models on a laptop)."""
    base = os.environ.get("KUBEINFER_CACHE") or str(Path.home() / ".cache" / "kubeinfer")
    return Path(base) / "models"


def fetch_model(source: ModelSource, cache: Path | None = None) -> Path:
    """A local directory with the model's files (downloaded and cached when remote)."""
    parts = urlsplit(source.uri)
    match parts.scheme:
        case "" | "file":
            return local_model(Path(parts.path if parts.scheme else source.uri))
        case "hf":
            return hf_model(source)
        case "s3" | "gs" | "az" | "abfs":
            root, durable = (cache, False) if cache is not None else cache_location(source)
            return remote_model(source.uri, root, durable)
        case other:
            raise ModelError(f"{FIELD}: unsupported scheme {other!r}; use file://, a path, s3://, gs://, az:// "
                             "or hf://org/name")


def cache_location(source: ModelSource) -> tuple[Path, bool]:
    """(root, durable): spec.model.cache when set (kept across pods, so flushed before publishing), else the
    pod's own folder."""
    shared = shared_cache(source)
    return (shared / "models", True) if shared is not None else (cache_root(), False)


def prefetch_for_pod(job: JobConfig, pod_index: int) -> None:
    """In the pod's launcher: start fetching the model (and serving it to the job's other pods)."""
    prefetch.start(job, pod_index, *cache_location(job.spec.model))


def shared_cache(source: ModelSource) -> Path | None:
    """spec.model.cache as mounted in the pod (the operator sets the env), or its hostPath on this machine."""
    mounted = os.environ.get(MODEL_CACHE_ENV)
    if mounted:
        return Path(mounted)
    return Path(source.cache.host_path) if source.cache and source.cache.host_path else None


def local_model(path: Path) -> Path:
    if not path.is_dir():
        raise ModelError(f"{FIELD}: {path} is not a directory (is the PVC mounted at this path in "
                         "workers.volumeMounts?)")
    if not any(path.iterdir()):
        raise ModelError(f"{FIELD}: {path} is empty")
    if _first_process():
        read_ahead(path)  # overlaps reading the volume with loading (one reader per pod)
    return path


def parse_hf(uri: str, default_revision: str) -> tuple[str, str]:
    """hf://org/name[@revision] -> (repo id, revision); the URI's revision wins over model.revision."""
    rest = uri.removeprefix("hf://").strip("/")
    repo, _, revision = rest.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ModelError(f"{FIELD}: {uri!r} is not hf://org/name[@revision]")
    return repo, revision or default_revision


def hf_model(source: ModelSource) -> Path:
    """`snapshot_download` (honours HF_HOME, HF_HUB_OFFLINE and HF_TOKEN; locks per file itself)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo, revision = parse_hf(source.uri, source.revision)
    shared = shared_cache(source)
    cache_dir = str(shared / "huggingface") if shared else None  # the hub's own layout keys by revision
    try:
        return Path(snapshot_download(repo_id=repo, revision=revision, token=os.environ.get("HF_TOKEN") or None,
                                      cache_dir=cache_dir))
    except RepositoryNotFoundError:
        raise ModelError(f"{FIELD}: Hugging Face repository {repo!r} not found (or HF_TOKEN in "
                         "model.credentialsSecret lacks access)") from None
    except LocalEntryNotFoundError:
        raise ModelError(f"{FIELD}: {repo}@{revision} is not in the local Hugging Face cache (HF_HOME) and the "
                         "hub is offline (HF_HUB_OFFLINE) or unreachable") from None
    except HfHubHTTPError as err:
        raise ModelError(f"{FIELD}: cannot download {repo}@{revision}: {err}") from None


def remote_model(uri: str, root: Path, durable: bool) -> Path:
    """The model's current version in a cache entry under `root` (fetched if missing), reported in start-up."""
    try:
        fetched = fetch_remote(uri, root, durable)
    except EmptyModel as err:
        raise ModelError(str(err)) from None
    report_reads(fetched)
    return fetched.path


def report_reads(fetched: Fetched) -> None:
    """Each process reports the bytes it read; local rank 0 also speaks for the pod: the launcher's reads when
    it fetched for the pod (`modelio.prefetch`), else a model found complete in the cache."""
    reads = {source: n for source, n in fetched.bytes_by_source.items() if source != "cache"}
    if _first_process():
        if prefetch.active():
            record = prefetch.read_record()
            if record is not None:
                for source, n in record.bytes.items():
                    reads[source] = reads.get(source, 0) + n
                startup.downloaded(record.seconds)
        else:
            reads["cache"] = fetched.bytes_by_source.get("cache", 0)
    for source, n in reads.items():
        startup.fetched(source, n, fetched.model_bytes)
    startup.fetched("storage", 0, fetched.model_bytes)  # the model's size, even when nothing was read


def _first_process() -> bool:
    """Local rank 0 speaks for the pod (its other processes find the same cache entry)."""
    return os.environ.get("LOCAL_RANK", "0") in ("", "0")


def check_model(model_dir: Path, source: ModelSource, task: str) -> None:
    """Fail before loading when the files do not fit the task, the pipeline class or the dtype."""
    from kubeinfer_runtime.strategies.common import torch_dtype

    torch_dtype(source.dtype)
    if task == "text-to-image":
        from kubeinfer_runtime.strategies.diffusion import pipeline_class

        pipeline_class(model_dir, source)
    else:
        from kubeinfer_runtime.strategies.textgen import lm_class

        lm_class(model_dir, source)
