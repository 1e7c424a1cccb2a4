"""A real S3 server (MinIO built from source) for tests and the dev cluster.

It listens on all interfaces so pods behind the node agent's bridge reach it at 10.244.0.1.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from localcluster.binaries import binary, binary_path, free_port, spawn, stop_pidfile, wait_until
from localcluster.controlplane import POD_API_HOST

DEFAULT_PORT = 9000
REGION = "us-east-1"
_STATE = "s3.json"


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
        """Start MinIO and wait until it answers its readiness probe."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(DEFAULT_PORT)
        self.access_key = "kubeinfer"
        self.secret_key = secrets.token_hex(16)
        state = {"port": self.port, "access_key": self.access_key, "secret_key": self.secret_key}
        (self.workdir / _STATE).write_text(json.dumps(state))
        (self.workdir / _STATE).chmod(0o600)
        env = {
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_REGION": REGION,
        }
        argv: list[str | Path] = [
            binary("minio"),
            "server",
            "--quiet",
            "--address",
            f"0.0.0.0:{self.port}",
            self.workdir / "data",
        ]
        spawn("minio", argv, self.logs, env=env, detach=self.detach)
        try:
            wait_until(self._ready, "minio", 60, self.log_file)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_pidfile(self.logs / "minio.pid", binary_path("minio"))

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

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def create_bucket(self, name: str) -> None:
        """Create ``name`` (no error if this server already has it)."""
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)

    def _ready(self) -> bool:
        url = f"{self.endpoint_url}/minio/health/ready"
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
