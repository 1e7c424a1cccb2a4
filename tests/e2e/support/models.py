"""Tiny random models for the e2e jobs: built once per machine (cached), uploaded once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubeinfer_runtime import tinymodels

KINDS = ("flux", "gpt2", "llama")
BUCKET = "models"


def upload_tiny_models(s3: Any) -> dict[str, Path]:
    """Every tiny model at s3://models/tiny-<kind>/ (the URIs the examples use)."""
    local: dict[str, Path] = {}
    for kind in KINDS:
        folder = tinymodels.cached(kind)
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                s3.upload_file(str(path), BUCKET, f"tiny-{kind}/{path.relative_to(folder).as_posix()}")
        local[kind] = folder
    return local
