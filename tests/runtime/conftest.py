"""Fixtures for the runtime tests: tiny models (built once per version, cached) and a torchrun launcher."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flux_reference import shared_reference
from strategy_harness import Launcher, launch

from kubeinfer_runtime.tinymodels import cached as tiny_model


@pytest.fixture(scope="session")
def flux_dir() -> Path:
    return tiny_model("flux")


@pytest.fixture(scope="session")
def flux_reference(flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, np.ndarray]:
    """Plain diffusers' images of make_items(3) on the tiny Flux (flux_reference.py): one render per run."""
    base = tmp_path_factory.getbasetemp()
    return shared_reference(flux_dir, base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)


@pytest.fixture(scope="session")
def sd_dir() -> Path:
    return tiny_model("sd")


@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    return tiny_model("gpt2")


@pytest.fixture(scope="session")
def llama_dir() -> Path:
    return tiny_model("llama")


@pytest.fixture
def run_strategy(tmp_path: Path) -> Launcher:
    counter = iter(range(100))

    def run(spec: dict[str, Any], model_dir: Path, cases: dict[str, list[dict[str, Any]]],
            nproc: int = 2, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return launch(spec, model_dir, cases, nproc, tmp_path / f"run{next(counter)}", env=env)

    return run
