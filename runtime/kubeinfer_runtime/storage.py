"""Object storage through fsspec: S3-compatible (s3fs), GCS/Azure (optional extras) and local paths.

Every call is retried with bounded exponential backoff, so a flaky network costs time, not items;
rejected credentials and missing buckets fail at once with a message naming the field to fix. Keys
are relative to the store's root (the job's `output.uri` or a model prefix).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Storage operations of this process by (verb, "items" for item outputs else "ledger"), retries included.
REQUESTS: Counter[tuple[str, str]] = Counter()

#: Env prefix under which the operator passes `model.credentialsSecret` (output credentials are unprefixed).
MODEL_ENV_PREFIX = "KUBEINFER_MODEL_"
STREAM_PART_BYTES = 64 << 20  # multipart part size of streamed writes (manifest.jsonl)


class StorageError(RuntimeError):
    """Storage that cannot be used as configured (credentials, endpoint, bucket); retrying will not help."""


@dataclass(frozen=True)
class RetryPolicy:
    """The default waits out a store that is gone for about a minute (46-92 s of backoff in all)."""

    attempts: int = 10
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so many ranks do not retry in lockstep."""
        return float(min(self.max_delay, self.base_delay * 2**attempt) * (0.5 + random.random() / 2))


def _env(name: str, prefix: str) -> str | None:
    """`prefix+name` wins over the plain variable (model and output stores may use different secrets)."""
    return os.environ.get(prefix + name) or os.environ.get(name) or None


def s3_options(env_prefix: str = "", endpoint_url: str | None = None) -> dict[str, Any]:
    """s3fs arguments from AWS_* env; short botocore timeouts, since retries are ours and bounded."""
    endpoint = endpoint_url or _env("AWS_ENDPOINT_URL_S3", env_prefix) or _env("AWS_ENDPOINT_URL", env_prefix)
    options: dict[str, Any] = {
        "key": _env("AWS_ACCESS_KEY_ID", env_prefix),
        "secret": _env("AWS_SECRET_ACCESS_KEY", env_prefix),
        "token": _env("AWS_SESSION_TOKEN", env_prefix),
        "endpoint_url": endpoint,
        "use_listings_cache": False,
        "skip_instance_cache": True,
        "config_kwargs": {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 1}},
    }
    region = _env("AWS_DEFAULT_REGION", env_prefix) or _env("AWS_REGION", env_prefix)
    if region:
        options["client_kwargs"] = {"region_name": region}
    return options


def gcs_options(env_prefix: str = "") -> dict[str, Any]:
    """gcsfs arguments: a service-account key from the Secret, else Google's default credentials."""
    key = _env("GOOGLE_APPLICATION_CREDENTIALS_JSON", env_prefix)
    if not key:
        return {}
    try:
        return {"token": json.loads(key)}
    except ValueError:
        raise ValueError("GOOGLE_APPLICATION_CREDENTIALS_JSON (from the credentials Secret) is not JSON: "
                         "store the service-account key file itself") from None


def filesystem(uri: str, field: str, env_prefix: str = "", endpoint_url: str | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, root path) for a URI; unknown schemes are an error naming `field`."""
    import fsspec

    parts = urlsplit(uri)
    match parts.scheme:
        case "" | "file":
            return fsspec.filesystem("file"), str(Path(parts.path if parts.scheme else uri).absolute())
        case "s3":
            fs = fsspec.filesystem("s3", **s3_options(env_prefix, endpoint_url))
            fs.retries = 1  # s3fs's own retry loop would multiply ours
            return fs, f"{parts.netloc}{parts.path}".rstrip("/")
        case "gs" | "gcs":
            fs = _optional("gcs", field, "kubeinfer[gcs]", uri, **gcs_options(env_prefix))
            return fs, f"{parts.netloc}{parts.path}".rstrip("/")
        case "az" | "abfs":
            conn = _env("AZURE_STORAGE_CONNECTION_STRING", env_prefix)
            fs = _optional("abfs", field, "kubeinfer[azure]", uri, connection_string=conn)
            return fs, f"{parts.netloc}{parts.path}".rstrip("/")
        case other:
            raise ValueError(f"{field}: unsupported scheme {other!r} in {uri!r}; use s3://, gs://, az://, "
                             "file:// or an absolute path")


def _optional(protocol: str, field: str, extra: str, uri: str, **options: Any) -> Any:
    import fsspec

    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError:
        raise ValueError(f"{field}: {uri!r} needs the optional extra {extra} (pip install '{extra}')") from None


def _is_permanent(err: BaseException) -> bool:
    return isinstance(err, PermissionError | FileNotFoundError | IsADirectoryError | NotADirectoryError)


class ObjectStore:
    """A prefix in some object store, with retried, atomic single-object operations."""

    def __init__(self, uri: str, field: str = "spec.output.uri", env_prefix: str = "",
                 endpoint_url: str | None = None, retry: RetryPolicy | None = None) -> None:
        self.uri, self.field = uri, field
        self.fs, self.root = filesystem(uri, field, env_prefix, endpoint_url)
        self.local = self.fs.protocol in ("file", ("file", "local"))
        self.retry = retry or RetryPolicy()

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def url(self, key: str = "") -> str:
        """The full location of `key`, for messages and the manifest."""
        return f"{self.uri.rstrip('/')}/{key}" if key else self.uri

    def put(self, key: str, data: bytes) -> None:
        """Write one object whole: a reader never sees a partial object under `key`."""
        if self.local:
            self.call(f"write {key}", lambda: _atomic_write(Path(self.path(key)), data))
        else:
            self.call(f"write {key}", lambda: self.fs.pipe_file(self.path(key), data))

    def put_new(self, key: str, data: bytes) -> bool:
        """Create `key` only if it does not exist (S3 `If-None-Match: *`, a hard link on local files).

        True when this call created it. A retried create that finds its own bytes there counts as created,
        so a lost response never makes the writer think another one won.
        """
        def create() -> bool:
            try:
                if self.local:
                    _exclusive_write(Path(self.path(key)), data)
                else:
                    self.fs.pipe_file(self.path(key), data, mode="create")
                return True
            except FileExistsError:
                return False
            except OSError as err:
                if not _precondition_failed(err):
                    raise
                return False

        return self.call(f"create {key}", create) or self.get(key) == data

    def put_stream(self, key: str, chunks: Callable[[], Iterable[bytes]]) -> None:
        """Write one object from chunks (a multipart upload on S3): whole or not at all, never all in memory.

        `chunks` is called again for a retry.
        """
        def write() -> None:
            if self.local:
                _atomic_write_chunks(Path(self.path(key)), chunks())
                return
            with self.fs.open(self.path(key), "wb", block_size=STREAM_PART_BYTES) as out:
                for chunk in chunks():
                    out.write(chunk)

        self.call(f"write {key}", write)

    def get(self, key: str) -> bytes:
        return bytes(self.call(f"read {key}", lambda: self.fs.cat_file(self.path(key))))

    def download(self, key: str, file: BinaryIO) -> BinaryIO:
        """`key` copied into `file` a piece at a time (never whole in memory); the file, rewound."""
        def copy() -> None:
            file.seek(0)
            file.truncate()
            with self.fs.open(self.path(key), "rb") as source:
                shutil.copyfileobj(source, file, STREAM_PART_BYTES)
            file.flush()

        self.call(f"read {key}", copy)
        file.seek(0)
        return file

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of `key` (fewer at its end): a record's head without the whole record."""
        return bytes(self.call(f"read {key}", lambda: self.fs.cat_file(self.path(key), start=start, end=end)))

    def exists(self, key: str) -> bool:
        return bool(self.call(f"stat {key}", lambda: self.fs.exists(self.path(key))))

    def list(self, prefix: str) -> list[str]:
        """Names of the objects directly under `prefix` (empty when it does not exist)."""

        def ls() -> list[str]:
            try:
                found = self.fs.ls(self.path(prefix), detail=False)
            except FileNotFoundError:
                return []
            names = (str(p).rstrip("/").rsplit("/", 1)[-1] for p in found)
            return [n for n in names if not n.startswith(".")]  # skip in-flight temporary files

        return self.call(f"list {prefix}", ls)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one storage operation with the retry policy; raise StorageError with the field when it fails."""
        started = time.monotonic()
        verb, _, key = what.partition(" ")
        for attempt in range(self.retry.attempts):
            REQUESTS[verb, "items" if key.startswith("items/") else "ledger"] += 1
            try:
                return fn()
            except FileNotFoundError as err:
                if what.startswith(("write", "list", "create")):
                    raise StorageError(f"{self.field}: {self.url()} does not exist ({err}); create the bucket "
                                       "or fix the URI") from err
                raise
            except PermissionError as err:
                raise StorageError(f"{self.field}: access to {self.url()} denied ({err}); check the credentials "
                                   "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the credentialsSecret)") from err
            except Exception as err:  # network and server errors of several client libraries: retried
                if _is_permanent(err) or attempt + 1 == self.retry.attempts:
                    elapsed = time.monotonic() - started
                    raise StorageError(f"{self.field}: cannot {what} at {self.url()} after {attempt + 1} attempts "
                                       f"in {elapsed:.0f} s: {type(err).__name__}: {err}") from err
                delay = self.retry.delay(attempt)
                log.warning("storage: %s failed (%s: %s); retry in %.1f s", what, type(err).__name__, err, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


def _precondition_failed(err: BaseException) -> bool:
    """s3fs reports S3's 412 (another writer created the key first) or 409 (a concurrent create) as OSError."""
    seen: BaseException | None = err
    while seen is not None:
        code = str(getattr(seen, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or "pre-condition" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _exclusive_write(path: Path, data: bytes) -> None:
    """Whole or absent, and never over an existing file: write a temporary, then hard-link it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink()


def _atomic_write_chunks(path: Path, chunks: Iterable[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
    os.replace(tmp, path)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
