"""The e2e session's locks and reaping (tests/e2e/support/shared.py), with real processes and flocks."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.support import shared

#: Enter the session (shared or alone), record when, hold it until told to release, record when.
HOLD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from e2e.support import shared
marker = Path({marker!r})
with shared.access(Path({session!r}), alone={alone}):
    marker.with_suffix(".in").write_text(repr(time.monotonic()))
    while not marker.with_suffix(".release").exists():
        if marker.with_suffix(".nest").exists() and not marker.with_suffix(".nested").exists():
            with shared.access(Path({session!r}), alone=False):  # a session fixture set up inside a test
                marker.with_suffix(".nested").touch()
        time.sleep(0.01)
    marker.with_suffix(".out").write_text(repr(time.monotonic()))
"""


class Holder:
    def __init__(self, session: Path, name: str, *, alone: bool) -> None:
        self.marker = session / name
        code = HOLD.format(tests=str(Path(__file__).parents[1]), session=str(session), alone=alone,
                           marker=str(self.marker))
        self.proc = subprocess.Popen([sys.executable, "-c", code])

    def entered(self) -> bool:
        return self.marker.with_suffix(".in").exists()

    def release(self) -> None:
        self.marker.with_suffix(".release").touch()
        assert self.proc.wait(timeout=60) == 0

    def time(self, suffix: str) -> float:
        return float(self.marker.with_suffix(suffix).read_text())


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def blocked_on_flock(pid: int) -> bool:
    """/proc/locks lists a waiter as '<n>: -> FLOCK ... <pid> ...'."""
    return any("->" in line and f" {pid} " in line for line in Path("/proc/locks").read_text().splitlines())


def test_shared_holders_overlap_and_a_serial_one_waits_for_all_of_them(tmp_path: Path) -> None:
    first = Holder(tmp_path, "first", alone=False)
    wait_until(first.entered, "the first shared holder")
    second = Holder(tmp_path, "second", alone=False)
    wait_until(second.entered, "a second shared holder beside the first")
    serial = Holder(tmp_path, "serial", alone=True)
    wait_until(lambda: blocked_on_flock(serial.proc.pid), "the serial holder to wait")
    assert not serial.entered()
    first.release()
    second.release()
    wait_until(serial.entered, "the serial holder after both released")
    serial.release()
    assert serial.time(".in") >= max(first.time(".out"), second.time(".out"))


def test_a_waiting_serial_holder_keeps_new_shared_ones_out(tmp_path: Path) -> None:
    first = Holder(tmp_path, "first", alone=False)
    wait_until(first.entered, "the first shared holder")
    serial = Holder(tmp_path, "serial", alone=True)
    wait_until(lambda: blocked_on_flock(serial.proc.pid), "the serial holder to wait")
    late = Holder(tmp_path, "late", alone=False)
    wait_until(lambda: blocked_on_flock(late.proc.pid), "the late shared holder to wait at the turnstile")
    first.release()
    wait_until(serial.entered, "the serial holder")
    assert not late.entered()
    serial.release()
    wait_until(late.entered, "the late shared holder after the serial one")
    late.release()
    assert late.time(".in") >= serial.time(".out")


def test_a_shared_holder_enters_again_past_a_waiting_serial_one(tmp_path: Path) -> None:
    """A session fixture set up inside a test's shared access must not queue behind the serial test that waits
    for that access to end: both would wait for ever."""
    first = Holder(tmp_path, "first", alone=False)
    wait_until(first.entered, "the first shared holder")
    serial = Holder(tmp_path, "serial", alone=True)
    wait_until(lambda: blocked_on_flock(serial.proc.pid), "the serial holder to wait")
    first.marker.with_suffix(".nest").touch()
    wait_until(first.marker.with_suffix(".nested").exists, "the shared holder's nested entry", timeout=20)
    assert not serial.entered()
    first.release()
    wait_until(serial.entered, "the serial holder")
    serial.release()


def test_reaping_removes_dead_runs_and_keeps_live_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared, "sessions_root", lambda: tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    shared.ensure(tmp_path / f"{dead.pid}-aaaaaa", dead.pid)
    live = shared.ensure(tmp_path / "1-bbbbbb", 1)  # pid 1 is alive
    shared.reap_abandoned()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


#: Session fixtures that may be set up outside the cluster access: no serial test stops what they use.
OUTSIDE_ACCESS = {"e2e_session": "a folder", "control_plane": "never stopped", "api_client": "a client",
                  "kubectl": "a function"}


def test_session_fixtures_that_use_the_cluster_take_the_access() -> None:
    """pytest sets up a session fixture before a test's own access: one that used the cluster then ran while a
    serial test had MinIO stopped, and its error was re-raised for every later test of the worker (CI, 87)."""
    e2e = Path(__file__).parents[1] / "e2e"
    unguarded = []
    for path in [*e2e.glob("*.py"), *e2e.glob("support/*.py")]:
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef) or not any(
                    "fixture" in ast.unparse(d) and "scope='session'" in ast.unparse(d) for d in node.decorator_list):
                continue
            body = ast.get_source_segment(source, node) or ""
            if node.name not in OUTSIDE_ACCESS and "shared.access(" not in body and "_beside_serial_tests(" not in body:
                unguarded.append(f"{path.name}::{node.name}")
    assert not unguarded, f"session fixtures that use the cluster outside shared.access: {unguarded}"
