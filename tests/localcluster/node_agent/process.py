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
from dataclasses import dataclass, field
from pathlib import Path

from .security import Identity
from .volumes import Mount

MAX_MESSAGE_BYTES = 4096
#: Host folders the images' entrypoints run from: this interpreter's environment, the Python it was
#: made from and the project's sources (an editable install). A volume mounted over one of them (an
#: emptyDir at /tmp, when the checkout lives under /tmp) would hide them, and a non-root user may not
#: enter a folder above them (/root, a 0700 temporary clone), so the prologue puts them back in reach.
HOST_PATHS = tuple(sorted({sys.prefix, sys.base_prefix, str(Path(__file__).resolve().parents[3])}))
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
    identity: Identity = field(default_factory=Identity)


# Runs inside the new namespaces (python, not sh: sh drops env names such as "app.conf" that
# kubelet passes through). A failure is recorded in the start-error file, which the agent opens (a
# file open for writing through this namespace's copy of a mount would keep it from turning
# read-only). Every source and the host folders to keep are opened before anything is mounted: a
# volume at /tmp may hide the others' sources when the agent's workdir is under /tmp.
# Then, as root: the volumes, the host folders the entrypoints run from made reachable for the
# container's user (a tmpfs over a folder it may not enter, e.g. /root or a 0700 checkout, holding
# only the way there), the rest of the mount table read-only where readOnlyRootFilesystem asks,
# no_new_privs, and last the user and groups.
PROLOGUE = """
import ctypes, json, os, socket, sys
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
OPTION_FLAGS = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
PR_SET_NO_NEW_PRIVS = 38
spec = json.loads(sys.argv[1])
user = spec["user"]
libc = ctypes.CDLL(None, use_errno=True)
error_file = spec["startErrorFd"]
os.set_inheritable(error_file, False)

def mount(source, target, flags, fstype=None, data=None):
    if libc.mount(source, target.encode(), fstype, flags, data):
        code = ctypes.get_errno()
        raise OSError(code, f"mount onto {target}: {os.strerror(code)}")

def can_enter(st):
    if user["uid"] == 0:
        return True
    bit = 0o100 if st.st_uid == user["uid"] else 0o010 if st.st_gid in user["groups"] else 0o001
    return bool(st.st_mode & bit)

def mask(path):
    mount(b"tmpfs", path, 0, b"tmpfs", b"mode=755")

def place(source, target, kind):
    if kind == "link":
        os.symlink(os.readlink(source), target)
        return
    if kind == "dir":
        os.makedirs(target, exist_ok=True)
    else:
        open(target, "a").close()
    mount(source.encode(), target, MS_BIND | MS_REC)

def kind_of(path):
    return "link" if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"

def expose(fd, path):
    here = ""
    for name in path.strip("/").split("/")[:-1]:
        here += "/" + name
        os.makedirs(here, exist_ok=True)
        if not can_enter(os.stat(here)):
            mask(here)
    original = os.fstat(fd)
    if os.path.exists(path) and os.path.samestat(os.stat(path), original) and can_enter(original):
        return
    source = f"/proc/self/fd/{fd}"
    os.makedirs(path, exist_ok=True)
    if can_enter(original):
        mount(source.encode(), path, MS_BIND | MS_REC)
        return
    children = []
    for name in os.listdir(source):
        kind = kind_of(f"{source}/{name}")
        held = f"{source}/{name}" if kind == "link" else os.open(f"{source}/{name}", os.O_PATH)
        children.append((name, kind, held))
    mask(path)
    for name, kind, held in children:
        place(held if kind == "link" else f"/proc/self/fd/{held}", f"{path}/{name}", kind)
        if kind != "link":
            os.close(held)

def unescape(point):
    for code, char in (("\\\\040", " "), ("\\\\011", "\\t"), ("\\\\012", "\\n"), ("\\\\134", "\\\\")):
        point = point.replace(code, char)
    return point

def read_only_root(writable):
    with open("/proc/self/mountinfo") as table:
        entries = [line.split() for line in table]
    for fields in entries:
        point = unescape(fields[4])
        if point in writable or any(point == top or point.startswith(top + "/") for top in ("/proc", "/sys", "/dev")):
            continue
        flags = sum(OPTION_FLAGS.get(option, 0) for option in fields[5].split(","))
        try:
            mount(None, point, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except FileNotFoundError:  # under a mask (e.g. another pod's tmpfs below /root): nothing reaches it
            if os.path.lexists(point):
                raise

try:
    socket.sethostname(spec["hostname"])
    mounts = [(os.open(src, os.O_PATH), dst, ro) for src, dst, ro in spec["mounts"]]
    kept = [(os.open(path, os.O_PATH | os.O_DIRECTORY), path) for path in spec["keep"]]
    for fd, dst, ro in mounts:
        mount(f"/proc/self/fd/{fd}".encode(), dst, MS_BIND)
        if ro:
            mount(None, dst, MS_REMOUNT | MS_BIND | MS_RDONLY)
    for fd, path in kept:
        expose(fd, path)
    for fd in [fd for fd, _, _ in mounts] + [fd for fd, _ in kept]:
        os.close(fd)
    if spec["readOnlyRoot"]:
        read_only_root({dst for _, dst, ro in spec["mounts"] if not ro})
    if spec["noNewPrivs"] and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if user["uid"] or user["gid"] or user["groups"]:
        os.setgroups(user["groups"])
        os.setgid(user["gid"])
        os.setuid(user["uid"])
    if spec["workingDir"]:
        os.chdir(spec["workingDir"])
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except FileNotFoundError:
        raise OSError(f'exec: "{sys.argv[2]}": executable file not found in $PATH') from None
    except OSError as err:
        raise OSError(f'exec: "{sys.argv[2]}": {err.strerror}') from None
except OSError as err:
    os.write(error_file, str(err).encode())
    print(f"node agent: cannot start container: {err}", file=sys.stderr, flush=True)
    sys.exit(128)
"""


def prologue_spec(launch: Launch, error_fd: int) -> str:
    mounts = [(m.source, m.target, m.read_only) for m in launch.mounts]
    mounts.append((str(launch.termination_host_path), launch.termination_path, False))
    who = launch.identity
    return json.dumps(
        {
            "hostname": launch.hostname,
            "mounts": mounts,
            "keep": HOST_PATHS,
            "workingDir": launch.working_dir,
            "user": {"uid": who.uid, "gid": who.gid, "groups": list(who.groups)},
            "readOnlyRoot": who.read_only_root,
            "noNewPrivs": who.no_new_privs,
            "startErrorFd": error_fd,
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
        launch.termination_host_path.chmod(0o666)  # as kubelet makes it: any container user writes it
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log_path, "ab") as log, open(start_error_path(launch), "wb") as start_error:
            self.log_offset = log.tell()
            argv = [
                "ip", "netns", "exec", launch.netns,
                "unshare", "--mount", "--uts", "--propagation", "private", "--",
                sys.executable, "-I", "-S", "-c", PROLOGUE, prologue_spec(launch, start_error.fileno()), *launch.argv,
            ]  # fmt: skip
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=launch.env,
                start_new_session=True,  # own process group: stop() signals the whole tree
                close_fds=True,
                pass_fds=(start_error.fileno(),),
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
