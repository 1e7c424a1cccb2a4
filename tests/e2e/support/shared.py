"""One local cluster per pytest run, shared by every xdist worker (and by a plain, single-process run).

The controlling pytest process picks a session folder (`pytest_configure`) and hands it to its xdist
workers; the first worker that needs a part (control plane, MinIO, node agents, the chart) starts it
detached under a file lock and records it there, the others attach to it. The controlling process
stops everything when the run ends (`teardown`), and at start-up reaps the folders of runs that were
killed before they could.

Tests share the cluster, so each must be correct beside others: its own namespace, its own nodes for
anything that depends on free capacity. A test that disturbs everyone (stops MinIO, uninstalls or
scales the shared operator) is marked `serial` and runs with no other test beside it (`access`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.binaries import cache_dir, stop_pidfile

SESSIONS = "sessions"
OWNER = "owner.pid"
AGENTS = "agents"
SERIAL_MARK = "serial"
SESSION_DIR = pytest.StashKey[Path]()
SESSION_OWNER = pytest.StashKey[int]()


def session_of(config: pytest.Config) -> Path:
    """This run's session folder (created on first use)."""
    return ensure(config.stash[SESSION_DIR], config.stash[SESSION_OWNER])


def sessions_root() -> Path:
    # Not under /tmp: pods mount emptyDirs at /tmp, which would hide their other volumes' sources.
    return cache_dir() / "e2e" / SESSIONS


def new_session_dir() -> Path:
    """A fresh (not yet created) session folder for this run, owned by this process."""
    return sessions_root() / f"{os.getpid()}-{uuid.uuid4().hex[:6]}"


def ensure(session: Path, owner: int) -> Path:
    """Create the session folder on first use, recording which pytest process owns it."""
    session.mkdir(parents=True, exist_ok=True)
    owner_file = session / OWNER
    if not owner_file.exists():
        owner_file.write_text(f"{owner}\n")
    return session


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (other processes wait)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_HELD: dict[Path, bool] = {}  # the sessions this process holds, and whether alone


@contextlib.contextmanager
def access(session: Path, *, alone: bool) -> Iterator[None]:
    """Run a test beside others (shared lock) or alone (exclusive lock).

    A turnstile taken first by everyone, and held by a waiting exclusive test, stops new tests from
    starting meanwhile, so a serial test is not starved by a stream of shared ones. Re-entrant: a process
    that holds the session (a serial module's tests inside its module-wide hold, a session fixture set up
    inside a test's access) does not queue again, where it would wait behind a serial test that waits for it.
    """
    held = _HELD.get(session)
    if held is not None:
        if alone and not held:
            raise RuntimeError("a serial test cannot take the cluster alone while this process holds it shared")
        yield
        return
    session.mkdir(parents=True, exist_ok=True)
    with open(session / "serial.turnstile", "a") as turnstile, open(session / "serial.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        _HELD[session] = alone
        try:
            yield
        finally:
            del _HELD[session]
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(turnstile, fcntl.LOCK_UN)


def agent_pidfile(session: Path, node: str) -> Path:
    return session / AGENTS / f"{node}.pid"


def teardown(session: Path) -> None:
    """Stop every part a run started in `session` (agents first: their pods talk to the rest)."""
    from localcluster.controlplane import ControlPlane
    from localcluster.node_agent.launcher import NodeAgentProcess
    from localcluster.s3 import S3Server

    nodes_dir = session / "nodes"
    for pidfile in sorted((session / AGENTS).glob("*.pid")):
        stop_pidfile(pidfile, Path(sys.executable), timeout=30)
        NodeAgentProcess(Path("/dev/null"), [pidfile.stem], nodes_dir, api_port=0).cleanup()
    if (session / "s3" / "s3.json").exists():
        S3Server.attach(session / "s3").stop()
    if (session / "controlplane" / "state.json").exists():
        ControlPlane.attach(session / "controlplane").stop()
    shutil.rmtree(session, ignore_errors=True)


def reap_abandoned() -> None:
    """Tear down the sessions of pytest runs that died without doing it themselves."""
    root = sessions_root()
    if not root.is_dir():
        return
    for session in root.iterdir():
        try:
            owner = int((session / OWNER).read_text())
        except (OSError, ValueError):
            owner = int(session.name.split("-", 1)[0]) if session.name.split("-", 1)[0].isdigit() else 0
        if owner and _alive(owner):
            continue
        teardown(session)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
