"""A real S3 server (MinIO built from source) for tests and the dev cluster.

It listens on all interfaces so pods behind the node agent's bridge reach it at 10.244.0.1.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

from localcluster.binaries import (
    ProcessExitedError,
    alive_as,
    binary,
    binary_path,
    free_port,
    log_tail,
    spawn,
    stop_pidfile,
    wait_until,
)
from localcluster.controlplane import POD_API_HOST

DEFAULT_PORT = 9000
REGION = "us-east-1"
_STATE = "s3.json"
_START_ATTEMPTS = 3
_PROBE: dict[str, Any] = {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 5}
_PORT_IN_USE = "port is already in use"  # MinIO's fatal message when it cannot bind


class S3Server:
    """MinIO in ``workdir`` with generated root credentials; ``attach`` re-opens a running one."""

    def __init__(self, workdir: Path, *, detach: bool = False) -> None:
        self.workdir = workdir.resolve()
        self.detach = detach
        self.logs = self.workdir / "logs"
        self.port = 0
        self.access_key = ""
        self.secret_key = ""

    @classmethod
    def attach(cls, workdir: Path) -> S3Server:
        server = cls(workdir, detach=True)
        state = json.loads((server.workdir / _STATE).read_text())
        server.port, server.access_key, server.secret_key = state["port"], state["access_key"], state["secret_key"]
        return server

    @property
    def endpoint_url(self) -> str:
        """For clients on this host."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pod_endpoint_url(self) -> str:
        """For pods behind the node agent's bridge."""
        return f"http://{POD_API_HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.logs / "minio.log"

    def start(self) -> S3Server:
        """Start MinIO on a free port and wait until it answers with our credentials.

        The state file that ``attach`` reads is written only then: a worker attaching never finds a
        server that did not come up. A port taken between choosing and binding it (MinIO then exits) is
        chosen again.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.access_key = "kubeinfer"
        self.secret_key = secrets.token_hex(16)
        for attempt in range(_START_ATTEMPTS):
            self.port = free_port(DEFAULT_PORT if attempt == 0 else None)
            try:
                self._run("minio")
                break
            except ProcessExitedError as error:
                if _PORT_IN_USE not in str(error) or attempt == _START_ATTEMPTS - 1:
                    raise
        state = {"port": self.port, "access_key": self.access_key, "secret_key": self.secret_key}
        (self.workdir / _STATE).write_text(json.dumps(state))
        (self.workdir / _STATE).chmod(0o600)
        return self

    def restart(self) -> None:
        """Start MinIO again on the same port, data and credentials (after ``stop``): clients keep their endpoint."""
        self._run("minio (restarted)")

    def stop(self) -> None:
        stop_pidfile(self.logs / "minio.pid", binary_path("minio"))

    def check_running(self, timeout: float = 30) -> None:
        """Raise, with MinIO's log tail, unless this server answers within ``timeout`` (a shared one another
        worker started: a busy machine may keep it from answering one probe in time, not for long)."""
        try:
            self._wait_answering(f"MinIO at {self.endpoint_url}", timeout)
        except TimeoutError as error:
            raise RuntimeError(f"{error} ({self.workdir}): it does not answer") from None

    def describe(self) -> str:
        """Whether the process in the pid file still runs, and the log's tail: for a test's failure report."""
        pid_file = self.logs / "minio.pid"
        pid = pid_file.read_text().strip() if pid_file.exists() else "(no pid file)"
        state = "running" if pid.isdigit() and alive_as(int(pid), binary_path("minio")) else "not running"
        return f"MinIO pid {pid} {state}, port {self.port}; last log lines:\n{log_tail(self.log_file, 20)}"

    def _run(self, what: str) -> None:
        env = {
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_REGION": REGION,
        }
        argv: list[str | Path] = [
            binary("minio"),
            "server",  # not --quiet: the log then says when it started, and why it exited
            "--address",
            f"0.0.0.0:{self.port}",
            self.workdir / "data",
        ]
        process = spawn("minio", argv, self.logs, env=env, detach=self.detach)
        try:
            self._wait_answering(what, 60, process)
        except BaseException:
            self.stop()
            raise

    def _wait_answering(self, what: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
        """Authenticated: another server that took the port answers the health probe, not our credentials."""
        client = self.client(probe=True)
        wait_until(lambda: client.list_buckets() is not None, what, timeout, self.log_file, process=process)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def env(self, *, for_pods: bool = False) -> dict[str, str]:
        """AWS-style variables that boto3, the runtime and the AWS CLI understand."""
        return {
            "AWS_ENDPOINT_URL": self.pod_endpoint_url if for_pods else self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, *, probe: bool = False) -> Any:
        """A boto3 S3 client for this server (``probe``: one attempt, short timeouts, to ask whether it is up)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, **(_PROBE if probe else {"retries": {"max_attempts": 3}})),
        )

    def create_bucket(self, name: str) -> None:
        """Create ``name`` (no error if this server already has it)."""
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)
