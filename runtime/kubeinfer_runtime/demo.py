"""`kubeinfer demo`: the first thing a new user runs. Tiny model built offline, cached, then a 2-process job.

The manifest is examples/local-demo.yaml (a test keeps the two equal), with model.uri pointed at the
cached tiny model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubeinfer_api.jobconfig import JobConfig

DEMO_MANIFEST = Path(__file__).with_name("local-demo.yaml")


def demo_manifest(model_dir: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(DEMO_MANIFEST.read_text())
    manifest["spec"]["model"]["uri"] = str(model_dir)
    return manifest


def print_outputs(job: JobConfig) -> None:
    out = job.spec.output.uri.rstrip("/")
    print(f"""
kubeinfer demo: done.
  images         {out}/items/
  manifest       {out}/manifest.jsonl   (one line per image: id, key, sha256, seed, rank, seconds)
  contact sheet  {out}/contact-sheet.png
Run it again: every item is already committed, so it finishes at once.
Your own job: copy examples/local-demo.yaml, change model.uri and the prompts, `kubeinfer run job.yaml`.""")
