"""One container = one process tree in the pod's network namespace and its own mount/UTS namespace.

`ip netns exec` puts the process in the pod's network namespace and bind-mounts the pod's
/etc/netns/<ns>/{hosts,resolv.conf}; `unshare --mount --uts` gives it a private mount table, where
a short shell prologue sets the hostname and bind-mounts the volumes at their real paths before
exec'ing the command (same pid, so the process group is the container).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .volumes import Mount

MAX_MESSAGE_BYTES = 4096
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


def prologue(launch: Launch) -> str:
    """The shell run inside the new namespaces before the command replaces it."""
    q = shlex.quote
    lines = ["set -e", f"hostname {q(launch.hostname)}"]
    for m in launch.mounts:
        lines.append(f"mount --bind {q(m.source)} {q(m.target)}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {q(m.target)}")
    lines.append(f"mount --bind {q(str(launch.termination_host_path))} {q(launch.termination_path)}")
    if launch.working_dir:
        lines.append(f"cd {q(launch.working_dir)}")
    lines.append('exec "$@"')
    return "\n".join(lines)


def exit_code(returncode: int) -> int:
    """Popen reports a signal as -N; containers report 128+N."""
    return 128 - returncode if returncode < 0 else returncode


class ContainerProcess:
    """A running container; never blocks: `poll()` also escalates a pending stop to SIGKILL."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        launch.termination_host_path.parent.mkdir(parents=True, exist_ok=True)
        launch.termination_host_path.write_bytes(b"")
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log_path, "ab") as log:
            self.log_offset = log.tell()
            argv = [
                "ip", "netns", "exec", launch.netns,
                "unshare", "--mount", "--uts", "--propagation", "private", "--",
                "/bin/sh", "-c", prologue(launch), "sh", *launch.argv,
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
