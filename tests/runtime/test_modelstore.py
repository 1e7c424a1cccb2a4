"""Model sources: local paths, S3 (real MinIO; cached, verified, model-specific credentials), hf:// offline."""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any

import pytest
from run_harness import upload_dir

from kubeinfer_api.spec import ModelSource
from kubeinfer_api.validation import SpecError, parse_spec
from kubeinfer_runtime.modelio.cache import MARKER
from kubeinfer_runtime.modelstore import ModelError, check_model, fetch_model, parse_hf
from kubeinfer_runtime.storage import StorageError

pytest_plugins = ["s3_fixtures"]


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    ours = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and not p.name.startswith("."))
    return files == ours and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def test_local_path_and_file_uri(flux_dir: Path, tmp_path: Path) -> None:
    assert fetch_model(ModelSource(uri=str(flux_dir))) == flux_dir
    assert fetch_model(ModelSource(uri=f"file://{flux_dir}")) == flux_dir
    with pytest.raises(ModelError, match=r"spec.model.uri: .*/absent is not a directory .*volumeMounts"):
        fetch_model(ModelSource(uri=str(tmp_path / "absent")))


def test_unknown_scheme_is_rejected_by_validation_and_by_the_runtime() -> None:
    with pytest.raises(SpecError, match=r"spec\.model\.uri"):
        parse_spec({"model": {"uri": "ftp://host/m"}, "inputs": {"prompts": ["x"]}, "output": {"uri": "/o"}})
    with pytest.raises(ModelError, match=r"spec\.model\.uri: unsupported scheme 'ftp'"):
        fetch_model(ModelSource.model_construct(uri="ftp://host/m"))


def test_wrong_pipeline_class_task_and_dtype_name_the_field(flux_dir: Path, gpt2_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"spec.model.pipeline: 'NoSuchPipeline' is not a diffusers pipeline"):
        check_model(flux_dir, ModelSource(uri="/m", pipeline="NoSuchPipeline"), "text-to-image")
    with pytest.raises(ValueError, match=r"spec.model.pipeline: StableDiffusionPipeline needs components"):
        check_model(flux_dir, ModelSource(uri="/m", pipeline="StableDiffusionPipeline"), "text-to-image")
    with pytest.raises(ValueError, match=r"spec.model.uri: .* has no config.json"):
        check_model(flux_dir, ModelSource(uri="/m"), "text-generation")
    with pytest.raises(ValueError, match=r"spec.model.uri: .* has no model_index.json"):
        check_model(gpt2_dir, ModelSource(uri="/m"), "text-to-image")
    with pytest.raises(ValueError, match=r"spec.model.dtype: unsupported dtype 'int4'"):
        check_model(gpt2_dir, ModelSource.model_construct(uri="/m", dtype="int4", pipeline=None), "text-generation")
    check_model(gpt2_dir, ModelSource(uri="/m"), "text-generation")


def test_hf_uri_parsing_and_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_hf("hf://org/name@v2", "main") == ("org/name", "v2")
    assert parse_hf("hf://org/name", "main") == ("org/name", "main")
    with pytest.raises(ModelError, match=r"spec.model.uri: 'hf://just-a-name' is not hf://org/name"):
        parse_hf("hf://just-a-name", "main")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"org/tiny@main is not in the local Hugging Face cache \(HF_HOME\)"):
        fetch_model(ModelSource(uri="hf://org/tiny"))


@pytest.mark.s3
def test_s3_model_is_downloaded_once_and_a_changed_model_is_a_new_version(
        s3_server: Any, s3_bucket: str, flux_dir: Path, tmp_path: Path) -> None:
    s3 = s3_server.client()
    upload_dir(s3, s3_bucket, "models/flux", flux_dir)
    source = ModelSource(uri=f"s3://{s3_bucket}/models/flux")
    local = fetch_model(source, cache=tmp_path / "cache")
    assert same_tree(flux_dir, local)
    marker = (local / MARKER).stat().st_mtime_ns
    assert fetch_model(source, cache=tmp_path / "cache") == local
    assert (local / MARKER).stat().st_mtime_ns == marker, "an unchanged model must not be downloaded again"
    s3.put_object(Bucket=s3_bucket, Key="models/flux/model_index.json", Body=b'{"_class_name": "FluxPipeline"}')
    newer = fetch_model(source, cache=tmp_path / "cache")
    assert newer != local and newer.parent == local.parent
    assert (newer / "model_index.json").read_bytes() == b'{"_class_name": "FluxPipeline"}'
    assert same_tree(flux_dir, local), "a published version is never modified"


@pytest.mark.s3
def test_model_credentials_win_over_output_credentials(s3_server: Any, s3_bucket: str, flux_dir: Path,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="m/config.json", Body=b"{}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "output-store-secret")  # wrong for this server
    monkeypatch.setenv("KUBEINFER_MODEL_AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    local = fetch_model(ModelSource(uri=f"s3://{s3_bucket}/m"), cache=tmp_path)
    assert (local / "config.json").read_bytes() == b"{}"
    monkeypatch.delenv("KUBEINFER_MODEL_AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match=r"spec.model.uri: access to s3://.* denied"):
        fetch_model(ModelSource(uri=f"s3://{s3_bucket}/m"), cache=tmp_path / "other")
    with pytest.raises(ModelError, match=r"spec.model.uri: s3://.*/empty holds no files"):
        monkeypatch.setenv("KUBEINFER_MODEL_AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
        fetch_model(ModelSource(uri=f"s3://{s3_bucket}/empty"), cache=tmp_path)
