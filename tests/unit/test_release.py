"""The release workflow publishes every image the Dockerfile defines, signed, with an SBOM."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def final_targets() -> set[str]:
    """Dockerfile stages that are images: named stages no other stage starts from or copies from."""
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.MULTILINE)
    bases = re.findall(r"^ARG \w+_DEPS=(\S+)$", text, flags=re.MULTILINE)  # FROM ${OPERATOR_DEPS} ...
    used = set(re.findall(r"--from=(\S+)", text)) | set(bases)
    return {s for s in stages if s not in used}


def test_the_release_builds_each_image_target_signed_with_an_sbom() -> None:
    workflow = yaml.safe_load((REPO / ".github/workflows/release.yml").read_text())
    images = workflow["jobs"]["images"]
    assert set(images["strategy"]["matrix"]["target"]) == final_targets() == {"operator", "runtime"}
    steps = {step.get("name", step.get("uses", "")): step for step in images["steps"]}
    build = steps["build and push"]["with"]
    assert build["push"] and build["sbom"] and "linux/arm64" in build["platforms"]
    assert "cosign sign" in steps["sign (keyless)"]["run"]
    assert images["permissions"]["id-token"] == "write"
    assert workflow[True]["push"]["tags"] == ["v*.*.*"]  # YAML reads the key `on` as True
