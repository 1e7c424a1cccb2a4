"""Parallel ranged reads of a model's files, straight into local files.

Every file is cut into parts and the parts of all files share one pool of threads, each with its
own connection, so one big shard and many small configs both keep every connection busy (the Run:ai
streamer and boto3's transfer manager work the same way). A part is read with `readinto` into a
writable memory map of its file, preallocated at full size: bytes go from the socket into the page
cache once, and the loader's mmap (safetensors) then reads those very pages. Small files go first,
then big ones in name order (the order the loaders open them). A file takes its final name only
when all its parts are in; until then it is `.<name>.part`.

Sources are tried in order for each part: a peer first (fan-out), object storage last. A source
that fails is skipped for the rest of the fetch, so a dead peer costs one failed request.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
MiB = 2**20
CONCURRENCY_ENV = "KUBEINFER_FETCH_CONCURRENCY"
PART_ENV = "KUBEINFER_FETCH_PART_MIB"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model: its path relative to the model's root, size and version tag (ETag)."""

    rel: str
    size: int
    etag: str = ""


class SourceUnavailable(OSError):
    """This source cannot serve the part (a peer gone or behind); the next source is tried."""


class Source(Protocol):
    #: Where the bytes come from, for the start-up report: "storage" or "peers".
    name: str
    #: False for a peer: its failure falls back to the next source instead of failing the fetch.
    final: bool

    def read_into(self, file: RemoteFile, start: int, view: memoryview) -> None:
        """Fill `view` with the file's bytes from `start`, or raise."""


def default_concurrency() -> int:
    """4 connections per core, 8 to 64: threads mostly wait on the network, and each costs CPU to feed."""
    return min(64, max(8, 4 * (os.cpu_count() or 2)))


@dataclass(frozen=True)
class Tuning:
    """Connections and part size (bench/model_load.py); env overrides for unusual storage."""

    concurrency: int = 8
    part_bytes: int = 32 * MiB

    @classmethod
    def from_env(cls) -> Tuning:
        def read(name: str, default: int) -> int:
            raw = os.environ.get(name, "")
            return int(raw) if raw.isdigit() and int(raw) > 0 else default

        return cls(concurrency=read(CONCURRENCY_ENV, default_concurrency()),
                   part_bytes=read(PART_ENV, cls.part_bytes // MiB) * MiB)


def plan_parts(files: Iterable[RemoteFile], part_bytes: int) -> list[tuple[RemoteFile, int, int]]:
    """(file, start, end) for every part: files smaller than a part first, then the rest by name."""
    ordered = sorted(files, key=lambda f: (f.size >= part_bytes, f.rel))
    return [(f, start, min(start + part_bytes, f.size)) for f in ordered for start in range(0, f.size, part_bytes)]


class FileWriter:
    """A destination file preallocated at full size and mapped writable; renamed into place when full."""

    def __init__(self, path: Path, size: int, parts: int) -> None:
        self.path, self.size = path, size
        self.tmp = path.with_name(f".{path.name}.part")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.left = parts
        self.lock = threading.Lock()
        with open(self.tmp, "wb") as handle:
            handle.truncate(size)
        self.fd = os.open(self.tmp, os.O_RDWR)
        self.map = mmap.mmap(self.fd, size) if size else None

    def view(self, start: int, end: int) -> memoryview:
        assert self.map is not None
        return memoryview(self.map)[start:end]

    def part_done(self) -> bool:
        """Count one part in; the last one closes the file and gives it its final name."""
        with self.lock:
            self.left -= 1
            last = self.left <= 0
        if last:
            self.close()
            os.replace(self.tmp, self.path)
        return last

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class FetchResult:
    bytes_by_source: dict[str, int]


class RangedFetch:
    """Fetch `files` into `dest` from `sources` (tried in order per part); `on_part` sees each finished part."""

    def __init__(self, sources: list[Source], tuning: Tuning | None = None,
                 on_part: Callable[[RemoteFile, int, int], None] | None = None) -> None:
        self.sources = sources
        self.tuning = tuning or Tuning.from_env()
        self.on_part = on_part
        self.dead: set[int] = set()
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def run(self, files: list[RemoteFile], dest: Path) -> FetchResult:
        parts = plan_parts(files, self.tuning.part_bytes)
        per_file: dict[str, int] = {}
        for file, _, _ in parts:
            per_file[file.rel] = per_file.get(file.rel, 0) + 1
        writers: dict[str, FileWriter] = {}
        for file in files:
            if file.size == 0:
                (dest / file.rel).parent.mkdir(parents=True, exist_ok=True)
                (dest / file.rel).write_bytes(b"")
            else:
                writers[file.rel] = FileWriter(dest / file.rel, file.size, per_file[file.rel])
        try:
            with ThreadPoolExecutor(max_workers=self.tuning.concurrency, thread_name_prefix="fetch") as pool:
                futures = [pool.submit(self._part, writers[f.rel], f, start, end) for f, start, end in parts]
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                for future in pending:
                    future.cancel()
                for future in done:
                    future.result()  # the first failure, with its message
        finally:
            for writer in writers.values():
                writer.close()
        return FetchResult(dict(self.counts))

    def _part(self, writer: FileWriter, file: RemoteFile, start: int, end: int) -> None:
        view = writer.view(start, end)
        try:
            source = self._read(file, start, view)
        finally:
            view.release()
        with self.lock:
            self.counts[source] = self.counts.get(source, 0) + end - start
        if self.on_part is not None:
            self.on_part(file, start, end)
        writer.part_done()

    def _read(self, file: RemoteFile, start: int, view: memoryview) -> str:
        """Read from the first source that can; returns its name."""
        for index, source in enumerate(self.sources):
            if index in self.dead and not source.final:
                continue
            try:
                source.read_into(file, start, view)
                return source.name
            except SourceUnavailable as err:
                if source.final:
                    raise
                with self.lock:
                    if index not in self.dead:
                        log.warning("model: %s source unavailable (%s); reading from the next source", source.name,
                                    err)
                    self.dead.add(index)
        raise SourceUnavailable("no source could serve the part")
