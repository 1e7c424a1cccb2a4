"""Weight fan-out: a job's pods pass the model to each other instead of each reading it from storage.

The pods form a tree over their indexes (pod i reads from pod (i - 1) // FANOUT; pod 0 reads from
storage), so every pod sends at most FANOUT copies whatever the job's size, and storage serves
about one. Each pod's launcher runs a small HTTP server (port 9401, `MODEL_PEER_PORT`) that offers
the model version it holds or is fetching: a ranged GET for bytes that have not arrived yet waits
for them, so the tree streams part by part instead of file by file. Only files of an offered
version are served, by their listed names; nothing else on the pod is reachable.

A peer that does not answer within `KUBEINFER_MODEL_PEER_WAIT_SECONDS` (30 s), answers 404 (another
version, or it fell back itself) or breaks off makes the reader switch to storage for the rest:
fan-out saves reads, it never blocks a job. Works for every strategy, elastic data included, since
it needs no process group: only the pods' stable DNS names from the headless Service.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubeinfer_runtime.modelio.ranged import RemoteFile, SourceUnavailable
from kubeinfer_runtime.modelio.sources import read_response

log = logging.getLogger(__name__)
FANOUT = 2
WAIT_ENV = "KUBEINFER_MODEL_PEER_WAIT_SECONDS"
#: A request for bytes the server does not have yet waits this long for them to arrive.
SERVE_WAIT_SECONDS = 120.0
_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


def parent(index: int) -> int | None:
    """The pod this pod reads the model from (None: pod 0 reads from storage)."""
    return (index - 1) // FANOUT if index > 0 else None


@dataclass
class Offer:
    """A model version this pod holds (complete) or is fetching (parts arrive one by one)."""

    version: str
    files: dict[str, RemoteFile]
    folders: list[Path]  # where a file may be: the published entry, then the staging folder
    done: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    complete: bool = False

    def covered(self, rel: str, start: int, end: int) -> bool:
        if self.complete:
            return True
        return any(a <= start and end <= b for a, b in self.done.get(rel, []))

    def open(self, rel: str) -> int:
        """A descriptor of the file wherever it is now: it moves from `.<name>.part` to its name when complete,
        and with the whole staging folder into the cache when the model is (a search may race a move once)."""
        name = Path(rel)
        for _ in range(3):
            for folder in self.folders:
                for candidate in (folder / name, folder / name.parent / f".{name.name}.part"):
                    try:
                        return os.open(candidate, os.O_RDONLY)
                    except FileNotFoundError:
                        continue
        raise FileNotFoundError(rel)


class Offers:
    """What this pod offers, shared by the fetch (writer) and the server's handler threads."""

    def __init__(self) -> None:
        self.by_version: dict[str, Offer] = {}
        self.changed = threading.Condition()

    def add(self, offer: Offer) -> Offer:
        with self.changed:
            self.by_version[offer.version] = offer
            self.changed.notify_all()
        return offer

    def part_done(self, version: str, file: RemoteFile, start: int, end: int) -> None:
        with self.changed:
            offer = self.by_version.get(version)
            if offer is not None:
                spans = offer.done.setdefault(file.rel, [])
                spans.append((start, end))
                spans.sort()
                merged: list[tuple[int, int]] = []
                for a, b in spans:
                    if merged and a <= merged[-1][1]:
                        merged[-1] = (merged[-1][0], max(merged[-1][1], b))
                    else:
                        merged.append((a, b))
                offer.done[file.rel] = merged
            self.changed.notify_all()

    def completed(self, version: str) -> None:
        """Every file is in (they are now in the published entry, the first of the offer's folders)."""
        with self.changed:
            offer = self.by_version.get(version)
            if offer is not None:
                offer.complete = True
            self.changed.notify_all()

    def withdraw(self, version: str) -> None:
        """The fetch failed: peers stop waiting for it and read from storage."""
        with self.changed:
            self.by_version.pop(version, None)
            self.changed.notify_all()

    def wait_for(self, version: str, rel: str, start: int, end: int, timeout: float) -> Offer | None:
        """The offer once it covers [start, end), or None (unknown version, withdrawn, or too slow)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                offer = self.by_version.get(version)
                if offer is None or rel not in offer.files:
                    return None
                if offer.covered(rel, start, end):
                    return offer
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: PeerServer

    def do_GET(self) -> None:
        match = re.fullmatch(r"/v1/models/([0-9a-f]+)/(.+)", self.path)
        ranged = _RANGE.match(self.headers.get("Range", ""))
        if not match or not ranged:
            self._fail(400, "GET /v1/models/<version>/<file> with Range: bytes=a-b")
            return
        version, rel = match.group(1), match.group(2)
        start, end = int(ranged.group(1)), int(ranged.group(2)) + 1
        offer = self.server.offers.wait_for(version, rel, start, end, self.server.serve_wait)
        if offer is None or end > offer.files[rel].size or start >= end:
            self._fail(404, f"version {version} of {rel} is not offered here (or not this range)")
            return
        fd = offer.open(rel)
        try:
            self.send_response(206)
            self.send_header("Content-Length", str(end - start))
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{offer.files[rel].size}")
            self.end_headers()
            self.wfile.flush()
            with os.fdopen(fd, "rb", closefd=False) as handle:
                self.connection.sendfile(handle, start, end - start)
        finally:
            os.close(fd)

    def _fail(self, status: int, message: str) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("peers: " + format, *args)


class PeerServer(ThreadingHTTPServer):
    """Serves `offers` on `port` from daemon threads (the pod's launcher keeps it for the pod's life)."""

    daemon_threads = True

    def __init__(self, offers: Offers, port: int, serve_wait: float = SERVE_WAIT_SECONDS) -> None:
        super().__init__(("", port), _Handler)
        self.offers, self.serve_wait = offers, serve_wait

    def start(self) -> PeerServer:
        threading.Thread(target=self.serve_forever, name="model-peers", daemon=True).start()
        return self


class _NotOffered(SourceUnavailable):
    """The peer answered but does not offer this version (yet)."""


class PeerSource:
    """Ranged reads from the parent pod; any failure makes the fetch fall back to storage."""

    name = "peers"
    final = False

    def __init__(self, host: str, port: int, version: str, wait_seconds: float | None = None) -> None:
        self.host, self.port, self.version = host, port, version
        raw = os.environ.get(WAIT_ENV, "")
        self.wait = wait_seconds if wait_seconds is not None else float(raw) if raw.isdigit() else 30.0
        self.started = time.monotonic()
        self.local = threading.local()

    def read_into(self, file: RemoteFile, start: int, view: memoryview) -> None:
        while True:
            try:
                self._get(file, start, view)
                return
            except (ConnectionRefusedError, socket.gaierror, TimeoutError, _NotOffered) as err:
                # Its pod may start (or list the model) a little later than this one: wait a while.
                if time.monotonic() - self.started > self.wait:
                    raise SourceUnavailable(f"pod {self.host}: {type(err).__name__}: {err}") from err
                time.sleep(1.0)
            except (OSError, http.client.HTTPException) as err:  # it went away mid-transfer
                raise SourceUnavailable(f"pod {self.host}: {type(err).__name__}: {err}") from err

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)  # a dropped SYN fails fast
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(SERVE_WAIT_SECONDS + 30)  # the server may wait for bytes to arrive
            self.local.conn = conn
        return conn

    def _get(self, file: RemoteFile, start: int, view: memoryview) -> None:
        conn = self._connection()
        try:
            conn.request("GET", f"/v1/models/{self.version}/{file.rel}",
                         headers={"Range": f"bytes={start}-{start + len(view) - 1}"})
            response = conn.getresponse()
            if response.status != 206:
                body = response.read().decode(errors="replace")
                raise _NotOffered(f"HTTP {response.status}: {body[:200]}")
            read_response(response, view)
        except BaseException:
            conn.close()
            self.local.conn = None
            raise
