"""Model I/O: parallel ranged reads into local files, and the versioned cache that publishes atomically."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from run_harness import upload_dir
from strategy_harness import REPO

from kubeinfer_api.naming import MODEL_CACHE_ENV
from kubeinfer_api.spec import ModelSource
from kubeinfer_runtime import modelstore
from kubeinfer_runtime.modelio.cache import MARKER, CacheEntry, version_of
from kubeinfer_runtime.modelio.ranged import RangedFetch, RemoteFile, Tuning, plan_parts
from kubeinfer_runtime.modelio.remote import remote_listing
from kubeinfer_runtime.modelio.sources import FsspecSource, ModelChanged, S3Source
from kubeinfer_runtime.storage import MODEL_ENV_PREFIX, ObjectStore, StorageError
from localcluster.s3_traffic import settled_bytes_sent

pytest_plugins = ["s3_fixtures"]
SMALL = Tuning(concurrency=4, part_bytes=4096)  # many parts even for the tiny models


def same_files(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    ours = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and not p.name.startswith("."))
    return files == ours and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def test_parts_cover_every_byte_small_files_first() -> None:
    files = [RemoteFile("b.safetensors", 10_000), RemoteFile("a/config.json", 100), RemoteFile("empty", 0),
             RemoteFile("a.safetensors", 8192)]
    parts = plan_parts(files, 4096)
    assert [p[0].rel for p in parts[:1]] == ["a/config.json"]
    assert [(p[0].rel, p[1], p[2]) for p in parts[1:]] == [
        ("a.safetensors", 0, 4096), ("a.safetensors", 4096, 8192),
        ("b.safetensors", 0, 4096), ("b.safetensors", 4096, 8192), ("b.safetensors", 8192, 10_000)]


def test_ranged_fetch_from_a_folder_store_rebuilds_the_model(flux_dir: Path, tmp_path: Path) -> None:
    store = ObjectStore(str(flux_dir), field="spec.model.uri")
    files = remote_listing(store)
    seen: list[tuple[str, int, int]] = []
    result = RangedFetch([FsspecSource(store)], SMALL, on_part=lambda f, s, e: seen.append((f.rel, s, e))).run(
        files, tmp_path / "m")
    assert same_files(flux_dir, tmp_path / "m")
    total = sum(f.size for f in files)
    assert result.bytes_by_source == {"storage": total}
    assert sum(e - s for _, s, e in seen) == total
    assert not list((tmp_path / "m").rglob(".*.part")), "no partial file is left once every part is in"


def test_a_file_that_shrinks_mid_fetch_never_gets_its_final_name(flux_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    big = max((p for p in flux_dir.rglob("*.safetensors")), key=lambda p: p.stat().st_size)
    (source / "weights.safetensors").write_bytes(big.read_bytes())
    store = ObjectStore(str(source), field="spec.model.uri")
    files = remote_listing(store)
    os.truncate(source / "weights.safetensors", files[0].size // 2)  # changed after the listing
    with pytest.raises(StorageError, match=r"spec.model.uri: .*weights.safetensors returned \d+ bytes .* changed"):
        RangedFetch([FsspecSource(store)], SMALL).run(files, tmp_path / "dest")
    assert not (tmp_path / "dest" / "weights.safetensors").exists()


def test_two_writers_without_a_shared_lock_publish_one_whole_model(tmp_path: Path) -> None:
    files = [RemoteFile("config.json", 2, "e1")]
    entry = CacheEntry(tmp_path, "s3://b/m", version_of(files))
    stagings = []
    for host in ("node-a", "node-b"):
        staging = entry.folder / f".staging-{entry.version}-{host}"
        staging.mkdir(parents=True)
        (staging / "config.json").write_text(host[-1] * 2)
        stagings.append(staging)
    assert not entry.complete()
    assert entry.publish(stagings[0], files, durable=True) == entry.path
    assert entry.publish(stagings[1], files, durable=False) == entry.path, "the second rename loses quietly"
    assert (entry.path / "config.json").read_text() == "aa" and (entry.path / MARKER).is_file()
    assert not stagings[1].exists()
    assert version_of(files) != version_of([RemoteFile("config.json", 2, "e2")]), "a new ETag is a new version"


def fetch_in_processes(uri: str, root: Path, count: int) -> list[str]:
    """`count` processes fetching the same model into the same cache at once (like the ranks of one pod)."""
    code = ("import sys; from pathlib import Path; from kubeinfer_runtime.modelstore import remote_model; "
            "print(remote_model(sys.argv[1], Path(sys.argv[2]), durable=False))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("api", "runtime"))}
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(root)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(count)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [out.strip() for out, _ in outs]


@pytest.mark.s3
def test_s3_fetch_equals_the_upload_and_concurrent_processes_read_it_once(
        s3_server: Any, s3_bucket: str, flux_dir: Path, tmp_path: Path) -> None:
    upload_dir(s3_server.client(), s3_bucket, "models/flux", flux_dir)
    uri = f"s3://{s3_bucket}/models/flux"
    paths = fetch_in_processes(uri, tmp_path / "cache", 2)
    assert paths[0] == paths[1]
    assert same_files(flux_dir, Path(paths[0]))
    leftovers = [p.name for p in Path(paths[0]).parent.iterdir() if p.name.startswith(".staging")]
    assert leftovers == [], "the staging folder became the model"
    model_bytes = sum(p.stat().st_size for p in flux_dir.rglob("*") if p.is_file())
    sent = settled_bytes_sent(s3_server.env(), s3_bucket)  # object bytes plus the two listings' XML
    assert model_bytes <= sent < model_bytes * 1.05, f"MinIO sent {sent} bytes for a {model_bytes}-byte model"


@pytest.mark.s3
def test_s3_object_replaced_during_the_fetch_is_an_error_not_a_mix(
        s3_server: Any, s3_bucket: str, flux_dir: Path, tmp_path: Path) -> None:
    s3 = s3_server.client()
    upload_dir(s3, s3_bucket, "m", flux_dir)
    store = ObjectStore(f"s3://{s3_bucket}/m", field="spec.model.uri", env_prefix=MODEL_ENV_PREFIX)
    files = remote_listing(store)
    s3.put_object(Bucket=s3_bucket, Key="m/model_index.json", Body=b'{"_class_name": "FluxPipeline"}')
    with pytest.raises(ModelChanged, match=r"spec.model.uri: s3://.*/m/model_index.json changed while"):
        RangedFetch([S3Source(store, MODEL_ENV_PREFIX)], SMALL).run(files, tmp_path / "staging")
    again = remote_listing(store)
    RangedFetch([S3Source(store, MODEL_ENV_PREFIX)], SMALL).run(again, tmp_path / "fresh")
    assert (tmp_path / "fresh" / "model_index.json").read_bytes() == b'{"_class_name": "FluxPipeline"}'


@pytest.mark.s3
def test_a_model_in_the_shared_cache_is_read_from_storage_no_more(
        s3_server: Any, s3_bucket: str, flux_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upload_dir(s3_server.client(), s3_bucket, "m", flux_dir)
    source = ModelSource(uri=f"s3://{s3_bucket}/m", cache={"hostPath": str(tmp_path / "shared")})
    first = modelstore.fetch_model(source)  # no env: a local run uses the hostPath itself
    assert first.is_relative_to(tmp_path / "shared")
    after_first = settled_bytes_sent(s3_server.env(), s3_bucket)
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "shared"))  # in a pod: the mounted cache
    assert modelstore.fetch_model(ModelSource(uri=f"s3://{s3_bucket}/m")) == first
    assert settled_bytes_sent(s3_server.env(), s3_bucket) - after_first < 4096, "only the listing, no object bytes"
