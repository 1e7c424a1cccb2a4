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
import time
from pathlib import Path
from urllib.parse import urlsplit

from kubeinfer_api.naming import MODEL_CACHE_ENV
from kubeinfer_api.spec import ModelSource
from kubeinfer_runtime import startup
from kubeinfer_runtime.modelio.cache import CacheEntry, version_of
from kubeinfer_runtime.modelio.ranged import RangedFetch, RemoteFile
from kubeinfer_runtime.modelio.sources import storage_source
from kubeinfer_runtime.storage import MODEL_ENV_PREFIX, ObjectStore

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
            shared = shared_cache(source)
            if cache is None and shared is not None:
                return remote_model(source.uri, shared / "models", durable=True)
            return remote_model(source.uri, cache or cache_root())
        case other:
            raise ModelError(f"{FIELD}: unsupported scheme {other!r}; use file://, a path, s3://, gs://, az:// "
                             "or hf://org/name")


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


def remote_model(uri: str, root: Path, durable: bool = False) -> Path:
    """A local folder with the model's current version: from the cache, or fetched into it (file lock per
    version, so the processes of a pod, or the pods sharing a cache, fetch it once)."""
    store = ObjectStore(uri, field=FIELD, env_prefix=MODEL_ENV_PREFIX)
    files = remote_listing(store)
    if not files:
        raise ModelError(f"{FIELD}: {uri} holds no files")
    model_bytes = sum(f.size for f in files)
    entry = CacheEntry(root, uri, version_of(files))
    if entry.complete():
        startup.fetched("cache", model_bytes if durable and _first_process() else 0, model_bytes)
        return entry.path
    with entry.lock():
        if entry.complete():  # another process fetched it while this one waited
            startup.fetched("cache", 0, model_bytes)
            return entry.path
        staging = entry.staging()
        todo = entry.missing(staging, files)
        log.info("model: fetching %d of %d files (%.1f MiB) from %s", len(todo), len(files),
                 sum(f.size for f in todo) / 2**20, uri)
        began = time.monotonic()
        result = RangedFetch([storage_source(store, MODEL_ENV_PREFIX)]).run(todo, staging)
        for source, nbytes in result.bytes_by_source.items():
            startup.fetched(source, nbytes, model_bytes)
        seconds = time.monotonic() - began
        log.info("model: fetched %.1f MiB in %.1f s (%.0f MiB/s)", sum(result.bytes_by_source.values()) / 2**20,
                 seconds, sum(result.bytes_by_source.values()) / 2**20 / max(seconds, 1e-3))
        return entry.publish(staging, files, durable)


def _first_process() -> bool:
    """Local rank 0 speaks for the pod (its other processes find the same cache entry)."""
    return os.environ.get("LOCAL_RANK", "0") in ("", "0")


def remote_listing(store: ObjectStore) -> list[RemoteFile]:
    """Every file under the store's root, with its size and version tag (S3 ETag, GCS generation...)."""
    found = store.call("list model files", lambda: store.fs.find(store.root, detail=True))
    out: list[RemoteFile] = []
    for path, info in sorted(found.items()):
        rel = str(path)[len(store.root):].lstrip("/")
        if rel and info.get("type", "file") == "file":
            tag = info.get("ETag") or info.get("etag") or info.get("generation") or info.get("md5Hash") or ""
            out.append(RemoteFile(rel=rel, size=int(info.get("size") or 0), etag=str(tag).strip('"')))
    return out


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
