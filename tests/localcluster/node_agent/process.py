"""One container = one process tree in the pod's network namespace and its own mount/UTS namespace.

`ip netns exec` puts the process in the pod's network namespace and bind-mounts the pod's
/etc/netns/<ns>/{hosts,resolv.conf}; `unshare --mount --uts` gives it a private mount table, where
a short prologue sets the hostname and bind-mounts the volumes at their real paths before exec'ing
the command (same pid, so the process group is the container).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .volumes import Mount

MAX_MESSAGE_BYTES = 4096
#: Host folders the images' entrypoints run from: this interpreter's environment and the project's
#: sources (an editable install). A volume mounted over one of them (an emptyDir at /tmp, when the
#: checkout lives under /tmp) would hide them, so the prologue mounts them back on top.
HOST_PATHS = tuple(sorted({sys.prefix, str(Path(__file__).resolve().parents[3])}))
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


@dataclass
class Launch:
    """Everything needed to start one container process."""

    argv: list[str]
    env: dict[str, str]
    netns: str
    hostname: str
    mounts: list[Mount]
    working_dir: str | None
    log_path: Path
    termination_host_path: Path
    termination_path: str
    fallback_to_logs: bool = False


# Runs inside the new namespaces (python, not sh: sh drops env names such as "app.conf" that
# kubelet passes through). A failure is recorded beside the termination file as a StartError.
# Every source, the host folders to keep and the start-error folder are opened before anything is
# mounted: a volume at /tmp may hide the others' sources when the agent's workdir is under /tmp.
PROLOGUE = """
import ctypes, json, os, socket, sys
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
error_dir = os.open(os.path.dirname(spec["startError"]), os.O_PATH | os.O_DIRECTORY)

def mount(source, target, flags):
    if libc.mount(source, target.encode(), None, flags, None):
        code = ctypes.get_errno()
        raise OSError(code, f"mount onto {target}: {os.strerror(code)}")

try:
    socket.sethostname(spec["hostname"])
    mounts = [(os.open(src, os.O_PATH), dst, ro) for src, dst, ro in spec["mounts"]]
    kept = [(os.open(path, os.O_PATH | os.O_DIRECTORY), path) for path in spec["keep"]]
    for fd, dst, ro in mounts:
        mount(f"/proc/self/fd/{fd}".encode(), dst, MS_BIND)
        if ro:
            mount(None, dst, MS_REMOUNT | MS_BIND | MS_RDONLY)
    for fd, path in kept:
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}".encode(), path, MS_BIND)
    for fd in [fd for fd, _, _ in mounts] + [fd for fd, _ in kept]:
        os.close(fd)
    if spec["workingDir"]:
        os.chdir(spec["workingDir"])
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except FileNotFoundError:
        raise OSError(f'exec: "{sys.argv[2]}": executable file not found in $PATH') from None
    except OSError as err:
        raise OSError(f'exec: "{sys.argv[2]}": {err.strerror}') from None
except OSError as err:
    name = os.path.basename(spec["startError"])
    with open(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=error_dir), "w") as out:
        out.write(str(err))
    print(f"node agent: cannot start container: {err}", file=sys.stderr, flush=True)
    sys.exit(128)
"""


def shadowed(paths: tuple[str, ...], targets: list[str]) -> list[str]:
    """The paths that a mount at one of `targets` would hide (the target itself or an ancestor)."""
    return [p for p in paths if any(p == t or p.startswith(t.rstrip("/") + "/") for t in targets)]


def prologue_spec(launch: Launch) -> str:
    mounts = [(m.source, m.target, m.read_only) for m in launch.mounts]
    mounts.append((str(launch.termination_host_path), launch.termination_path, False))
    return json.dumps(
        {
            "hostname": launch.hostname,
            "mounts": mounts,
            "keep": shadowed(HOST_PATHS, [target for _, target, _ in mounts]),
            "workingDir": launch.working_dir,
            "startError": str(start_error_path(launch)),
        }
    )


def start_error_path(launch: Launch) -> Path:
    return launch.termination_host_path.with_suffix(".starterror")


def exit_code(returncode: int) -> int:
    """Popen reports a signal as -N; containers report 128+N."""
    return 128 - returncode if returncode < 0 else returncode


class ContainerProcess:
    """A running container; never blocks: `poll()` also escalates a pending stop to SIGKILL."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        launch.termination_host_path.parent.mkdir(parents=True, exist_ok=True)
        launch.termination_host_path.write_bytes(b"")
        start_error_path(launch).unlink(missing_ok=True)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log_path, "ab") as log:
            self.log_offset = log.tell()
            argv = [
                "ip", "netns", "exec", launch.netns,
                "unshare", "--mount", "--uts", "--propagation", "private", "--",
                sys.executable, "-I", "-S", "-c", PROLOGUE, prologue_spec(launch), *launch.argv,
            ]  # fmt: skip
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=launch.env,
                start_new_session=True,  # own process group: stop() signals the whole tree
                close_fds=True,
            )
        self.kill_deadline: float | None = None
        self.stop_requested = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        """Exit code once the process is gone, else None."""
        code = self.popen.poll()
        if code is None and self.kill_deadline is not None and time.monotonic() >= self.kill_deadline:
            self._signal(signal.SIGKILL)
            self.kill_deadline = None
        return None if code is None else exit_code(code)

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM the process group now, SIGKILL it once the grace period is over."""
        if self.stop_requested or self.popen.poll() is not None:
            return
        self.stop_requested = True
        self._signal(signal.SIGTERM if grace_seconds > 0 else signal.SIGKILL)
        self.kill_deadline = time.monotonic() + grace_seconds

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def start_error(self) -> str | None:
        """Why the command could not be started (exec or mount failure), if that is what happened."""
        try:
            return start_error_path(self.launch).read_text()
        except OSError:
            return None

    def termination_message(self, code: int) -> str:
        """The terminationMessagePath file, else (FallbackToLogsOnError, failed) the last log lines."""
        try:
            message = self.launch.termination_host_path.read_bytes()[:MAX_MESSAGE_BYTES]
        except OSError:
            message = b""
        if not message.strip() and self.launch.fallback_to_logs and code != 0:
            message = self._log_tail()
        return message.decode(errors="replace")

    def _log_tail(self) -> bytes:
        try:
            with open(self.launch.log_path, "rb") as log:
                log.seek(self.log_offset)
                run_output = log.read()
        except OSError:
            return b""
        tail = b"\n".join(run_output.rstrip(b"\n").split(b"\n")[-FALLBACK_LOG_LINES:])
        return tail[-FALLBACK_LOG_BYTES:]
