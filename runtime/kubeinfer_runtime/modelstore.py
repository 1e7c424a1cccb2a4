"""Model sources: a path or file:// (a mounted PVC), s3:// (any S3-compatible store), gs://, az://, hf://.

Remote models are copied once per pod into a local cache: every process of the pod takes the same
file lock, the first downloads (files in parallel, each checked against the listed size and, for
single-part S3 uploads, the MD5 ETag) and writes a `.complete` record; the others find it and reuse
the copy. A later run with the same listing reuses it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubeinfer_api.spec import ModelSource
from kubeinfer_runtime.storage import MODEL_ENV_PREFIX, ObjectStore

log = logging.getLogger(__name__)
FIELD = "spec.model.uri"
COMPLETE = ".complete"


class ModelError(ValueError):
    """A model that cannot be used as specified; the message names the field."""


def cache_root() -> Path:
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
            return download(source.uri, cache or cache_root())
        case other:
            raise ModelError(f"{FIELD}: unsupported scheme {other!r}; use file://, a path, s3://, gs://, az:// "
                             "or hf://org/name")


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
    try:
        return Path(snapshot_download(repo_id=repo, revision=revision, token=os.environ.get("HF_TOKEN") or None))
    except RepositoryNotFoundError:
        raise ModelError(f"{FIELD}: Hugging Face repository {repo!r} not found (or HF_TOKEN in "
                         "model.credentialsSecret lacks access)") from None
    except LocalEntryNotFoundError:
        raise ModelError(f"{FIELD}: {repo}@{revision} is not in the local Hugging Face cache (HF_HOME) and the "
                         "hub is offline (HF_HUB_OFFLINE) or unreachable") from None
    except HfHubHTTPError as err:
        raise ModelError(f"{FIELD}: cannot download {repo}@{revision}: {err}") from None


def download(uri: str, cache: Path) -> Path:
    """Copy a remote prefix into `cache/<hash of uri>` once per pod (file lock), verified."""
    from filelock import FileLock

    store = ObjectStore(uri, field=FIELD, env_prefix=MODEL_ENV_PREFIX)
    target = cache / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24]
    target.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        listing = remote_listing(store)
        if not listing:
            raise ModelError(f"{FIELD}: {uri} holds no files")
        if _complete(target) == listing:
            return target
        log.info("model: downloading %d files (%.1f MiB) from %s", len(listing),
                 sum(f["size"] for f in listing.values()) / 2**20, uri)
        (target / COMPLETE).unlink(missing_ok=True)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda rel: _fetch_one(store, rel, listing[rel], target), sorted(listing)))
        (target / COMPLETE).write_text(json.dumps(listing, sort_keys=True))
    return target


def remote_listing(store: ObjectStore) -> dict[str, dict[str, Any]]:
    """{relative path: {size, etag}} of every file under the store's root."""
    found = store.call("list model files", lambda: store.fs.find(store.root, detail=True))
    out: dict[str, dict[str, Any]] = {}
    for path, info in found.items():
        rel = str(path)[len(store.root):].lstrip("/")
        if rel and info.get("type", "file") == "file":
            out[rel] = {"size": int(info.get("size") or 0), "etag": str(info.get("ETag") or "").strip('"')}
    return out


def _complete(target: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((target / COMPLETE).read_text()))
    except (OSError, ValueError):
        return None


def _fetch_one(store: ObjectStore, rel: str, expected: dict[str, Any], target: Path) -> None:
    dest = target / rel
    if dest.is_file() and dest.stat().st_size == expected["size"] and _etag_ok(dest, expected["etag"]):
        return  # left by an interrupted download
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    store.call(f"download {rel}", lambda: store.fs.get_file(store.path(rel), str(tmp)))
    size = tmp.stat().st_size
    if size != expected["size"] or not _etag_ok(tmp, expected["etag"]):
        tmp.unlink(missing_ok=True)
        raise ModelError(f"{FIELD}: {rel} arrived with {size} bytes or a different checksum than listed "
                         f"({expected['size']} bytes, etag {expected['etag']}); it changed during the download")
    os.replace(tmp, dest)


def _etag_ok(path: Path, etag: str) -> bool:
    """S3 single-part ETags are the MD5; multipart ones (with '-') and other stores are size-checked only."""
    if len(etag) != 32 or "-" in etag:
        return True
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == etag


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
