"""Where the pinned upstream binaries live, and how to run them as daemons we can always stop.

Versions come from hack/versions.env (the one place they are pinned); hack/build-tools.sh builds
them into the same cache layout this module computes: ``<cache>/bin/<name>-<version>/<name>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"
_VERSION_KEYS = {
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kubectl": "KUBERNETES_VERSION",
    "etcd": "ETCD_VERSION",
    "helm": "HELM_VERSION",
    "minio": "MINIO_VERSION",
    "jobset-controller": "JOBSET_VERSION",  # the benchmarks only: `hack/build-tools.sh jobset`
    "kueue": "KUEUE_VERSION",  # the Kueue e2e tests and bench/admission_latency.py
}


_DAEMON_PORTS_FROM = 20000
_PORT_PICKS = random.SystemRandom()  # not the module's generator, which a test may seed alike in every worker


class MissingBinaryError(RuntimeError):
    """A pinned binary has not been built on this machine yet."""


class ProcessExitedError(RuntimeError):
    """A daemon ended while we waited for it to become ready."""


def cache_dir() -> Path:
    """The cache root shared with hack/build-tools.sh (``KUBEINFER_CACHE`` overrides it)."""
    return Path(os.environ.get("KUBEINFER_CACHE", Path.home() / ".cache" / "kubeinfer"))


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse the shell-sourceable KEY=VALUE file, ignoring comments and blank lines."""
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip().strip("'\"")
    return versions


def binary_path(name: str) -> Path:
    """Where hack/build-tools.sh puts the pinned binary ``name`` (built or not)."""
    if name not in _VERSION_KEYS:
        raise KeyError(f"unknown binary {name!r}; known: {sorted(_VERSION_KEYS)}")
    version = read_versions()[_VERSION_KEYS[name]]
    return cache_dir() / "bin" / f"{name}-{version}" / name


def binary(name: str) -> Path:
    """Path of the pinned binary ``name``; raises with the fix if it was not built."""
    path = binary_path(name)
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"{path} is missing: build it with `bash hack/build-tools.sh` (or `make tools`)")
    return path


def free_port(preferred: int | None = None) -> int:
    """A TCP port free on all interfaces: ``preferred`` if it is free, else one below the kernel's ephemeral range.

    A port the kernel hands out (``bind`` to 0, an outgoing connection's local port) can be taken by any of
    the run's processes (gloo and TCPStore listeners, clients) the moment its daemon is down: MinIO
    restarted on its port after an outage test could not bind it again. Below the ephemeral range only an
    explicit bind takes a port, and the random pick keeps concurrent callers apart.
    """
    low = _ephemeral_low()
    spread = range(_DAEMON_PORTS_FROM, max(low, _DAEMON_PORTS_FROM))
    for candidate in ([preferred] if preferred else []) + _PORT_PICKS.sample(spread, min(len(spread), 64)) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", candidate))
            except OSError:
                continue
            port: int = sock.getsockname()[1]
            return port
    raise RuntimeError("no free TCP port")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _die_with_parent() -> None:
    """Runs in the child: kill it when the test process dies, so a killed pytest leaks nothing.

    SIGKILL, not SIGTERM: every daemon gets it at once, and a terminating apiserver whose etcd is
    already gone hangs in graceful shutdown for a minute.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def spawn(
    name: str,
    argv: Sequence[str | Path],
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    detach: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a daemon logging to ``log_dir/<name>.log`` and record its pid in ``<name>.pid``.

    ``detach=True`` lets it outlive this process (``python -m localcluster up``); otherwise it is
    tied to this process's life.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as log:
        # Dated, so a log that ends without a word (a SIGKILL) still tells which start it was and when.
        log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} starting {name}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=None if detach else _die_with_parent,
        )
    (log_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def alive_as(pid: int, exe: str | Path) -> bool:
    """True if ``pid`` is still the process we started (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return cmdline == str(exe)


def stop_pidfile(pid_file: Path, exe: Path, timeout: float = 15.0) -> None:
    """SIGTERM the daemon recorded in ``pid_file``, SIGKILL it after ``timeout``, then forget it."""
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip())
    if alive_as(pid, exe):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive_as(pid, exe) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if alive_as(pid, exe):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
    pid_file.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    log: Path | None = None,
    *,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``check`` until it is true; on timeout raise with the tail of ``log``; if ``process`` (the
    daemon being waited for) exits meanwhile, raise ProcessExitedError at once with that tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and (code := process.poll()) is not None:
            raise ProcessExitedError(_with_tail(f"{what} exited with {code}", log))
        try:
            if check():
                return
        except Exception:  # not ready yet: any error means "try again"
            pass
        time.sleep(0.25)
    raise TimeoutError(_with_tail(f"{what} not ready after {timeout:.0f}s", log))


def _with_tail(message: str, log: Path | None) -> str:
    tail = log_tail(log) if log else ""
    return message + (f"; last log lines of {log}:\n{tail}" if tail else "")


def log_tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
