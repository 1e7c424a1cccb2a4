"""`auto`: model size from safetensors headers (nothing loaded) and the resolved strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from kubeinfer_api.jobconfig import make_job_config
from kubeinfer_api.validation import parse_spec
from kubeinfer_runtime.strategies.auto import model_bytes, resolve_strategy

pytestmark = pytest.mark.runtime


def loaded_bytes(model_dir: Path, itemsize: int) -> int:
    """What the weights take as real tensors (all floating point in these models)."""
    total = 0
    for path in model_dir.rglob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            total += sum(handle.get_tensor(key).numel() for key in handle.keys()) * itemsize  # noqa: SIM118
    return total


def job(task: str, gpus: int = 1, nodes: int = 1, **workers: Any) -> Any:
    spec = parse_spec({"model": {"uri": "/m", "dtype": "bfloat16"}, "task": {"type": task},
                       "inputs": {"prompts": ["x"]}, "output": {"uri": "/o"}, "strategy": {"type": "auto"},
                       "workers": {"gpusPerNode": gpus, "nodes": nodes, **workers}})
    return make_job_config("t", spec)


def test_size_from_headers_matches_tensors(flux_dir: Path, gpt2_dir: Path) -> None:
    for model_dir in (flux_dir, gpt2_dir):
        assert model_bytes(model_dir, "float32") == loaded_bytes(model_dir, 4)
        assert model_bytes(model_dir, "bfloat16") == loaded_bytes(model_dir, 2)


def test_resolution(flux_dir: Path, gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kubeinfer_runtime.strategies.auto as auto

    size = model_bytes(flux_dir, "bfloat16")
    assert resolve_strategy(job("text-to-image"), flux_dir, "cpu")[0] == "data"
    monkeypatch.setattr(auto, "device_memory", lambda device: size * 2)
    name, why = resolve_strategy(job("text-to-image"), flux_dir, "cuda:0")
    assert name == "data" and "fit on one device" in why
    monkeypatch.setattr(auto, "device_memory", lambda device: size // 2)
    one_process = {"processesPerNode": 1}
    assert resolve_strategy(job("text-to-image", gpus=4, **one_process), flux_dir, "cuda:0")[0] == "deviceMap"
    with pytest.raises(ValueError, match=r"set workers\.processesPerNode: 1"):
        resolve_strategy(job("text-to-image", gpus=4), flux_dir, "cuda:0")
    lm_size = model_bytes(gpt2_dir, "bfloat16")
    monkeypatch.setattr(auto, "device_memory", lambda device: lm_size // 2)
    assert resolve_strategy(job("text-generation", gpus=2), gpt2_dir, "cuda:0")[0] == "pipeline"
    with pytest.raises(ValueError, match=r"add GPUs"):
        resolve_strategy(job("text-generation", gpus=1), gpt2_dir, "cuda:0")


def test_explicit_strategy_passes_through(flux_dir: Path) -> None:
    spec = parse_spec({"model": {"uri": "/m"}, "inputs": {"prompts": ["x"]}, "output": {"uri": "/o"},
                       "strategy": {"type": "data"}})
    assert resolve_strategy(make_job_config("t", spec), flux_dir, "cpu")[0] == "data"


def test_no_safetensors_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"auto needs \*\.safetensors weights"):
        resolve_strategy(job("text-to-image"), tmp_path, "cpu")
