"""Object storage against a real S3 server (MinIO): round trips, clear bounded failures, background commits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from strategy_harness import free_port

from kubeinfer_runtime import storage
from kubeinfer_runtime.ledger import Ledger
from kubeinfer_runtime.outputs import Committer, encode
from kubeinfer_runtime.storage import ObjectStore, RetryPolicy, StorageError, gcs_options
from kubeinfer_runtime.strategies.base import Item, Result

pytest_plugins = ["s3_fixtures"]

pytestmark = pytest.mark.s3
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


def results(count: int) -> list[Result]:
    out = []
    for i in range(count):
        image = Image.new("RGB", (8, 8), (i * 20 % 256, 7, 99))
        out.append(Result(item=Item(index=i, id=f"{i:05d}", prompt=f"p{i}", seed=i), output=image, seconds=0.5))
    return out


def test_round_trip(s3_bucket: str) -> None:
    store = ObjectStore(f"s3://{s3_bucket}/run/a/")
    store.put("items/x.png", b"abc")
    store.put("_ledger/items/x.json", b"{}")
    assert store.get("items/x.png") == b"abc"
    assert store.exists("items/x.png") and not store.exists("items/y.png")
    assert store.list("items") == ["x.png"]
    assert store.list("nothing-here") == []
    assert store.url("items/x.png") == f"s3://{s3_bucket}/run/a/items/x.png"


def test_bad_credentials_fail_at_once_naming_the_secret(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(StorageError, match=r"spec.output.uri: access to s3://.* denied .*credentialsSecret"):
        ObjectStore(f"s3://{s3_bucket}/run/").put("k", b"v")


def test_unreachable_endpoint_gives_up_after_bounded_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    with pytest.raises(StorageError, match=r"spec.output.uri: cannot write k at s3://bucket/run after 3 attempts"):
        ObjectStore("s3://bucket/run", retry=FAST).put("k", b"v")


def test_missing_bucket_is_named(s3_server: Any, s3_bucket: str) -> None:
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-kubeinfer/x does not exist"):
        ObjectStore("s3://no-such-bucket-kubeinfer/x").put("k", b"v")


def test_committer_writes_object_then_entry_and_records_failures(s3_server: Any, s3_bucket: str) -> None:
    store = ObjectStore(f"s3://{s3_bucket}/job/")
    ledger = Ledger(store)
    committer = Committer(store, ledger, "png", rank=1, attempt=2, threads=3, max_pending=2)
    batch = results(7)
    for result in batch:
        committer.submit(result)
    committer.submit(Result(item=Item(index=7, id="00007", prompt="bad", seed=7), error="ValueError: nope"))
    stats = committer.close()
    assert (stats.succeeded, stats.failed) == (7, 1)
    entries = ledger.entries()
    assert [e.id for e in entries] == [f"{i:05d}" for i in range(7)]
    for entry, result in zip(entries, batch, strict=True):
        data = store.get(entry.key)
        assert data == encode(result, "png")
        assert (entry.sha256, entry.bytes) == (hashlib.sha256(data).hexdigest(), len(data))
        assert (entry.rank, entry.attempt, entry.seed) == (1, 2, result.item.seed)
    assert ledger.failed() == {"00007"}
    assert ledger.state().failures["00007"]["error"] == "ValueError: nope"
    records = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="job/_ledger/commits/")["Contents"]
    assert len(records) == 1, "eight items fit one commit record"
    keys = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="job/items/")["Contents"]
    assert len(keys) == 7


def test_committer_raises_when_the_store_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    store = ObjectStore("s3://bucket/run", retry=FAST)
    committer = Committer(store, Ledger(store), "png", rank=0, attempt=0)
    committer.submit(results(1)[0])
    with pytest.raises(StorageError, match=r"cannot write items/00000\.png"):
        committer.close()


def test_gcs_key_comes_from_the_secret_and_the_model_store_may_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GCS server here: only what gcsfs is given is checked (the operator injects these keys)."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS_JSON", json.dumps({"client_email": "out@p.iam"}))
    monkeypatch.setenv("KUBEINFER_MODEL_GOOGLE_APPLICATION_CREDENTIALS_JSON", json.dumps({"client_email": "m@p.iam"}))
    assert gcs_options()["token"]["client_email"] == "out@p.iam"
    assert gcs_options("KUBEINFER_MODEL_")["token"]["client_email"] == "m@p.iam"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS_JSON", "/var/run/key.json")
    with pytest.raises(ValueError, match="is not JSON: store the service-account key file itself"):
        gcs_options()
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS_JSON")
    assert gcs_options() == {}, "without a key gcsfs falls back to Google's default credentials"


def test_a_streamed_write_is_one_whole_object(s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """manifest.jsonl is streamed: on S3 a multipart upload (parts of the minimum 5 MiB), locally a rename."""
    monkeypatch.setattr(storage, "STREAM_PART_BYTES", 5 << 20)
    chunks = [bytes([i]) * (1 << 20) for i in range(12)]
    for store in (ObjectStore(f"s3://{s3_bucket}/stream/"), ObjectStore(str(tmp_path))):
        store.put_stream("big", lambda: iter(chunks))
        assert store.get("big") == b"".join(chunks)
        assert store.list("") == ["big"]
    assert [p.name for p in tmp_path.iterdir()] == ["big"], "no temporary file left behind"
