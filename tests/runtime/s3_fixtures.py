"""A real S3 server (MinIO, from tests/localcluster) for the runtime tests: one per session, a bucket per test.

Register with `pytest_plugins = ["s3_fixtures"]` in the root conftest (or import the fixtures).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.binaries import MissingBinaryError
from localcluster.s3 import S3Server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    workdir: Path = tmp_path_factory.mktemp("minio")
    try:
        server = S3Server(workdir).start()
    except MissingBinaryError as err:
        pytest.skip(f"needs MinIO: {err}")
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, with this process's AWS_* env pointing at the server (children inherit it)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return name
