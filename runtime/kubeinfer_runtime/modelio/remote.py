"""A remote model (s3://, gs://, az://) into a cache entry: found there, or fetched from a peer and storage.

One writer per entry (its file lock): the processes of a pod, and pods sharing a cache, fetch each
version once; the others wait and find it complete. While fetching, the pod offers what it has to
its child pods (`peers`), and reads from its parent pod first when it has one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubeinfer_api.naming import MODEL_PEER_PORT
from kubeinfer_runtime.modelio.cache import CacheEntry, version_of
from kubeinfer_runtime.modelio.peers import Offer, Offers, PeerSource
from kubeinfer_runtime.modelio.ranged import RangedFetch, RemoteFile, Source
from kubeinfer_runtime.modelio.sources import storage_source
from kubeinfer_runtime.storage import MODEL_ENV_PREFIX, ObjectStore

log = logging.getLogger(__name__)
FIELD = "spec.model.uri"


class EmptyModel(ValueError):
    """The URI lists no files."""


@dataclass
class FanOut:
    """This pod's place in the job's fan-out tree: what it serves, and whom it reads from first."""

    offers: Offers | None = None
    parent_host: str | None = None
    port: int = MODEL_PEER_PORT


@dataclass
class Fetched:
    path: Path
    model_bytes: int
    #: Bytes this call read, by source ("storage", "peers"), and "cache" for a model found complete.
    bytes_by_source: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


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


def fetch_remote(uri: str, root: Path, durable: bool, fanout: FanOut | None = None,
                 on_fetched: Callable[[Fetched], None] | None = None) -> Fetched:
    """The model's current version in `root` (a cache entry), fetched if it is not there yet."""
    fanout = fanout or FanOut()
    store = ObjectStore(uri, field=FIELD, env_prefix=MODEL_ENV_PREFIX)
    files = remote_listing(store)
    if not files:
        raise EmptyModel(f"{FIELD}: {uri} holds no files")
    model_bytes = sum(f.size for f in files)
    entry = CacheEntry(root, uri, version_of(files))
    if entry.complete():
        _offer_complete(fanout, entry, files)
        return Fetched(entry.path, model_bytes, {"cache": model_bytes})
    with entry.lock():
        if entry.complete():  # another process of this pod (or cache) fetched it meanwhile
            _offer_complete(fanout, entry, files)
            return Fetched(entry.path, model_bytes)
        return _fetch_into(entry, store, files, durable, fanout, on_fetched)


def _offer_complete(fanout: FanOut, entry: CacheEntry, files: list[RemoteFile]) -> None:
    if fanout.offers is not None:
        fanout.offers.add(Offer(entry.version, {f.rel: f for f in files}, [entry.path], complete=True))


def _fetch_into(entry: CacheEntry, store: ObjectStore, files: list[RemoteFile], durable: bool, fanout: FanOut,
                on_fetched: Callable[[Fetched], None] | None) -> Fetched:
    staging = entry.staging()
    todo = entry.missing(staging, files)
    offers = fanout.offers
    if offers is not None:
        have = {f.rel for f in files} - {f.rel for f in todo}  # left complete by an earlier attempt
        offers.add(Offer(entry.version, {f.rel: f for f in files}, [entry.path, staging],
                         done={f.rel: [(0, f.size)] for f in files if f.rel in have}))
    sources: list[Source] = []
    if fanout.parent_host:
        sources.append(PeerSource(fanout.parent_host, fanout.port, entry.version))
    sources.append(storage_source(store, MODEL_ENV_PREFIX))
    log.info("model: fetching %d of %d files (%.1f MiB) of %s from %s", len(todo), len(files),
             sum(f.size for f in todo) / 2**20, store.uri, " then ".join(
                 f"pod {fanout.parent_host}" if s.name == "peers" else "storage" for s in sources))
    began = time.monotonic()
    on_part = (lambda f, a, b: offers.part_done(entry.version, f, a, b)) if offers is not None else None
    try:
        result = RangedFetch(sources, on_part=on_part).run(todo, staging)
    except BaseException:
        if offers is not None:
            offers.withdraw(entry.version)
        raise
    fetched = Fetched(entry.path, sum(f.size for f in files), result.bytes_by_source, time.monotonic() - began)
    total = sum(result.bytes_by_source.values())
    log.info("model: fetched %.1f MiB in %.1f s (%.0f MiB/s): %s", total / 2**20, fetched.seconds,
             total / 2**20 / max(fetched.seconds, 1e-3),
             ", ".join(f"{n / 2**20:.1f} MiB from {s}" for s, n in sorted(result.bytes_by_source.items())))
    if on_fetched is not None:
        on_fetched(fetched)
    entry.publish(staging, files, durable)
    if offers is not None:
        offers.completed(entry.version)
    return fetched
