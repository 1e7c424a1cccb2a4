"""Where a model's bytes come from: object storage (S3 fast path, or any fsspec store).

S3 parts are plain HTTP GETs on keep-alive connections, one per thread, signed by botocore
(presigned URLs) and read with `readinto` straight into the destination: no response object copies
the body. Each GET carries `If-Match` with the listed ETag, so an object replaced during the fetch
fails with a clear error instead of mixing two versions. Other stores (gs://, az://) use fsspec's
ranged `cat_file`. Errors are retried with the storage's backoff; a refused credential, a missing
object or a changed one are not.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from kubeinfer_runtime.modelio.ranged import RemoteFile
from kubeinfer_runtime.storage import ObjectStore, RetryPolicy, StorageError, s3_options

log = logging.getLogger(__name__)
FIELD = "spec.model.uri"


class ModelChanged(ValueError):
    """An object's version changed between listing and reading."""


class _Transient(OSError):
    """A failure worth retrying (connection reset, 5xx, short read)."""


def retried(what: str, uri: str, retry: RetryPolicy, fn: Any) -> None:
    """Run `fn` with backoff on transient errors; permanent ones pass through at once."""
    started = time.monotonic()
    for attempt in range(retry.attempts):
        try:
            fn()
            return
        except (_Transient, http.client.HTTPException, ConnectionError, TimeoutError) as err:
            if attempt + 1 == retry.attempts:
                raise StorageError(f"{FIELD}: cannot {what} at {uri} after {attempt + 1} attempts in "
                                   f"{time.monotonic() - started:.0f} s: {type(err).__name__}: {err}") from err
            delay = retry.delay(attempt)
            log.warning("model: %s failed (%s: %s); retry in %.1f s", what, type(err).__name__, err, delay)
            time.sleep(delay)


def read_response(response: http.client.HTTPResponse, view: memoryview) -> None:
    """Fill `view` from the body (readinto: the socket writes into our memory)."""
    got = 0
    while got < len(view):
        n = response.readinto(view[got:])
        if not n:
            raise _Transient(f"connection closed after {got} of {len(view)} bytes")
        got += n


class S3Source:
    """Ranged GETs against S3 or an S3-compatible store (MinIO, Ceph, R2)."""

    name = "storage"
    final = True

    def __init__(self, store: ObjectStore, env_prefix: str, endpoint_url: str | None = None,
                 retry: RetryPolicy | None = None) -> None:
        import botocore.session
        from botocore.config import Config

        options = s3_options(env_prefix, endpoint_url)
        self.bucket, _, self.prefix = store.root.partition("/")
        self.uri, self.retry = store.uri, retry or store.retry
        region = (options.get("client_kwargs") or {}).get("region_name") or "us-east-1"
        self.client = botocore.session.get_session().create_client(
            "s3", endpoint_url=options["endpoint_url"], aws_access_key_id=options["key"],
            aws_secret_access_key=options["secret"], aws_session_token=options["token"], region_name=region,
            config=Config(signature_version="s3v4"))
        self.local = threading.local()

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _connection(self, url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
        if conn is None or (conn.host, conn.port) != (parts.hostname, parts.port or conn.default_port):
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = cls(parts.hostname or "", parts.port, timeout=60)
            self.local.conn = conn
        return conn

    def read_into(self, file: RemoteFile, start: int, view: memoryview) -> None:
        end = start + len(view) - 1
        retried(f"read {file.rel} bytes {start}-{end}", self.uri, self.retry,
                lambda: self._get(file, start, end, view))

    def _get(self, file: RemoteFile, start: int, end: int, view: memoryview) -> None:
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(file.rel)}, ExpiresIn=3600)
        parts = urlsplit(url)
        headers = {"Range": f"bytes={start}-{end}"}
        if file.etag:
            headers["If-Match"] = f'"{file.etag}"'
        conn = self._connection(url)
        try:
            conn.request("GET", f"{parts.path}?{parts.query}", headers=headers)
            response = conn.getresponse()
            if response.status != 206:
                body = response.read(4096).decode(errors="replace")
                self._raise_for(response.status, file, body)
            read_response(response, view)
        except BaseException:
            conn.close()
            self.local.conn = None
            raise

    def _raise_for(self, status: int, file: RemoteFile, body: str) -> None:
        where = f"{self.uri.rstrip('/')}/{file.rel}"
        if status == 412:
            raise ModelChanged(f"{FIELD}: {where} changed while the model was being read (its ETag is no longer "
                               f"{file.etag}); start the job again once the upload is finished")
        if status in (401, 403):
            raise StorageError(f"{FIELD}: access to {where} denied (HTTP {status}); check the credentials "
                               "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in model.credentialsSecret)")
        if status == 404:
            raise StorageError(f"{FIELD}: {where} disappeared while the model was being read")
        raise _Transient(f"HTTP {status}: {body[:300]}")


class FsspecSource:
    """Ranged `cat_file` through fsspec (gs://, az://, anything without the S3 fast path)."""

    name = "storage"
    final = True

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def read_into(self, file: RemoteFile, start: int, view: memoryview) -> None:
        path = self.store.path(file.rel)
        data = self.store.call(f"read {file.rel}",
                               lambda: self.store.fs.cat_file(path, start=start, end=start + len(view)))
        if len(data) != len(view):
            raise StorageError(f"{FIELD}: {self.store.url(file.rel)} returned {len(data)} bytes for a range of "
                               f"{len(view)}; it changed while the model was being read")
        view[:] = data


def storage_source(store: ObjectStore, env_prefix: str, endpoint_url: str | None = None) -> S3Source | FsspecSource:
    return S3Source(store, env_prefix, endpoint_url) if urlsplit(store.uri).scheme == "s3" else FsspecSource(store)
