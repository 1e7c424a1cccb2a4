"""A model on a mounted volume: read ahead of the loader, in parallel, while it loads.

safetensors maps the files and the kernel reads them page fault by page fault, a little ahead; on a
network filesystem or a fast disk that is far below what the storage gives to a few large parallel
reads (fastsafetensors makes the same observation). So while the loader works, a few threads read
the files in 32 MiB blocks, in the order the loaders open them, into a scratch buffer: the pages land
in the page cache and the loader's faults find them there. Nothing is copied to a second place, and
a loader that gets ahead of the readers simply reads those pages itself.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubeinfer_runtime.modelio.ranged import RemoteFile, plan_parts

log = logging.getLogger(__name__)
BLOCK = 32 * 2**20
READERS = 4


def read_ahead(folder: Path, readers: int = READERS) -> threading.Thread:
    """Start reading every file of `folder` into the page cache in the background (daemon threads)."""
    files = [RemoteFile(str(p.relative_to(folder)), p.stat().st_size) for p in sorted(folder.rglob("*"))
             if p.is_file()]
    thread = threading.Thread(target=_read_all, args=(folder, files, readers), name="read-ahead", daemon=True)
    thread.start()
    return thread


def _read_all(folder: Path, files: list[RemoteFile], readers: int) -> None:
    local = threading.local()

    def read(part: tuple[RemoteFile, int, int]) -> None:
        file, start, end = part
        buffer = getattr(local, "buffer", None)
        if buffer is None:
            buffer = local.buffer = bytearray(BLOCK)
        fd = os.open(folder / file.rel, os.O_RDONLY)
        try:
            os.preadv(fd, [memoryview(buffer)[: end - start]], start)
        finally:
            os.close(fd)

    try:
        with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="read-ahead") as pool:
            list(pool.map(read, plan_parts(files, BLOCK)))
    except OSError as err:  # the loader will report a real problem with the files itself
        log.debug("model: read-ahead stopped: %s", err)
