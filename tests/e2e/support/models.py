"""Tiny random models for the e2e jobs: built once per machine (cached), uploaded once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from localcluster.binaries import cache_dir

KINDS = ("flux", "gpt2", "llama")
BUCKET = "models"


def build_tiny_model(kind: str) -> Path:
    """`python -m kubeinfer_runtime.tinymodels KIND DIR` into the cache, keyed by the builders' VERSION."""
    from kubeinfer_runtime.tinymodels import VERSION

    out = cache_dir() / "tinymodels" / f"v{VERSION}" / kind
    marker = out / ".complete"
    if not marker.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "kubeinfer_runtime.tinymodels", kind, str(out)], check=True,
                       timeout=600)  # fmt: skip
        marker.write_text("")
    return out


def upload_tiny_models(s3: Any) -> dict[str, Path]:
    """Every tiny model at s3://models/tiny-<kind>/ (the URIs the examples use)."""
    local: dict[str, Path] = {}
    for kind in KINDS:
        folder = build_tiny_model(kind)
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != ".complete":
                s3.upload_file(str(path), BUCKET, f"tiny-{kind}/{path.relative_to(folder).as_posix()}")
        local[kind] = folder
    return local
