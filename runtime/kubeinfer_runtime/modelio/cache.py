"""Complete models on local disk, keyed by URI and version, published atomically.

Layout under the cache root (a pod's own folder, or the job's `spec.model.cache` volume shared by
jobs and nodes):

    <uri digest>/<version>/              a complete model, never modified again
    <uri digest>/<version>/.kubeinfer-model.json    its listing (what `version` was computed from)
    <uri digest>/<version>.lock          held while one writer fetches that version
    <uri digest>/.staging-<version>-<host>/         a writer's work in progress

The version is a digest of the listing (every file's path, size and ETag), so a changed object is a
new version and an unchanged model is found again by any job. A writer fetches into its own staging
folder and renames it into place: readers see a whole model or none, and two writers on hosts whose
file locks do not reach each other (some NFS setups) still never mix their files; the second
rename simply loses. A writer that restarts resumes from the files its staging folder already holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubeinfer_runtime.modelio.ranged import RemoteFile

MARKER = ".kubeinfer-model.json"


def version_of(files: list[RemoteFile]) -> str:
    listing = sorted((f.rel, f.size, f.etag) for f in files)
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class CacheEntry:
    """One version of one model in a cache root."""

    root: Path
    uri: str
    version: str

    @property
    def folder(self) -> Path:
        return self.root / hashlib.sha256(self.uri.rstrip("/").encode()).hexdigest()[:20]

    @property
    def path(self) -> Path:
        return self.folder / self.version

    def complete(self) -> bool:
        return (self.path / MARKER).is_file()

    def lock(self) -> Any:
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.folder / f"{self.version}.lock"))

    def staging(self) -> Path:
        """This host's work-in-progress folder (a restarted pod keeps its hostname, and its partial files)."""
        path = self.folder / f".staging-{self.version}-{socket.gethostname()}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def missing(self, staging: Path, files: list[RemoteFile]) -> list[RemoteFile]:
        """Files a previous attempt did not finish (a finished file has its final name and size)."""
        return [f for f in files if not _has(staging / f.rel, f.size)]

    def publish(self, staging: Path, files: list[RemoteFile], durable: bool) -> Path:
        """Write the marker, then rename the staging folder into place (or drop it if another writer won).

        `durable` (a cache that outlives the pod) flushes the files first, so a crash cannot publish pages
        that never reached the disk; a pod's own cache dies with the pod and skips that cost.
        """
        marker = staging / MARKER
        marker.write_text(json.dumps({"uri": self.uri, "files": [asdict(f) for f in files]}, sort_keys=True))
        if durable:
            _fsync_tree(staging)
        try:
            os.rename(staging, self.path)
        except OSError:
            if not self.complete():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another writer published the same version first
        return self.path


def _has(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _fsync_tree(folder: Path) -> None:
    """Data on disk before the rename makes it visible (a crash must not publish empty pages)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
