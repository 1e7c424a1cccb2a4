"""`kubeinfer run`: the same manifest on this machine with real torchrun processes, compared with plain diffusers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from run_harness import PARAMS, kubeinfer, manifest, outputs, reference_pngs, upload_dir, write

from kubeinfer_api.jobconfig import make_job_config
from kubeinfer_api.validation import parse_manifest
from kubeinfer_runtime.inputs import load_items
from kubeinfer_runtime.ledger import Ledger, fingerprint
from kubeinfer_runtime.storage import ObjectStore

pytest_plugins = ["s3_fixtures"]

pytestmark = pytest.mark.runtime
REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["a red fox", "a blue whale", "the old lighthouse", "a bowl of ramen", "neon city"]
SEED = 3


@pytest.fixture(scope="module")
def reference(flux_dir: Path) -> list[bytes]:
    return reference_pngs(flux_dir, PROMPTS, SEED, PARAMS)


def manifest_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def test_two_processes_equal_diffusers_and_a_rerun_does_nothing(flux_dir: Path, tmp_path: Path,
                                                                reference: list[bytes]) -> None:
    job = write(tmp_path / "job.yaml", manifest("local", str(flux_dir), {"prompts": PROMPTS}, seed=SEED))
    out = tmp_path / "out"
    proc = kubeinfer("run", str(job), "--nproc", "2", "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = outputs(out)
    lines = manifest_lines(files["manifest.jsonl"])
    assert [e["index"] for e in lines] == [0, 1, 2, 3, 4]
    assert {e["rank"] for e in lines} == {0, 1}, "both processes must have computed items"
    for entry, expected in zip(lines, reference, strict=True):
        assert files[entry["key"]] == expected, f"{entry['id']} differs from a direct FluxPipeline call"
        assert entry["sha256"] == hashlib.sha256(expected).hexdigest()
    assert sorted(k for k in files if k.startswith("items/")) == [f"items/{i:05d}.png" for i in range(5)]
    assert files["contact-sheet.png"].startswith(b"\x89PNG")
    assert json.loads(files["_SUCCESS"])["succeeded"] == 5
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "items").iterdir()}
    again = kubeinfer("run", str(job), "--nproc", "2", "--output", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "5 items, 5 already committed, 0 to do" in again.stderr
    assert mtimes == {p: p.stat().st_mtime_ns for p in (out / "items").iterdir()}


@pytest.mark.s3
def test_model_from_s3_and_outputs_to_s3(flux_dir: Path, tmp_path: Path, s3_server: Any, s3_bucket: str,
                                         reference: list[bytes]) -> None:
    s3 = s3_server.client()
    upload_dir(s3, s3_bucket, "models/flux", flux_dir)
    job = write(tmp_path / "job.yaml", manifest("s3run", f"s3://{s3_bucket}/models/flux",
                                                {"prompts": PROMPTS[:3]}, seed=SEED))
    proc = kubeinfer("run", str(job), "--nproc", "2", "--output", f"s3://{s3_bucket}/runs/a/",
                     env={"KUBEINFER_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = ObjectStore(f"s3://{s3_bucket}/runs/a/")
    lines = manifest_lines(store.get("manifest.jsonl"))
    assert [store.get(e["key"]) for e in lines] == reference[:3]
    assert store.exists("_SUCCESS") and store.exists("contact-sheet.png")


def test_strategy_world_size_mismatch_is_a_field_error(tmp_path: Path) -> None:
    doc = manifest("ctx", "/m", {"prompts": ["x"]}, strategy={"type": "context", "context": {"ulyssesDegree": 2}})
    proc = kubeinfer("run", str(write(tmp_path / "job.yaml", doc)), "--nproc", "3")
    assert proc.returncode == 2
    assert "spec.strategy.context: ringDegree * ulyssesDegree (2) must divide the world size (3" in proc.stderr
    assert "change --nproc" in proc.stderr


def test_validate_reports_every_field(tmp_path: Path) -> None:
    ok = kubeinfer("validate", str(REPO / "examples" / "local-demo.yaml"))
    assert ok.returncode == 0 and "valid (data: 2 data-parallel replicas; world size 2)" in ok.stdout
    bad = manifest("bad", "ftp://x", {"prompts": ["x"]}, task={"type": "text-to-image", "seed": -1})
    proc = kubeinfer("validate", str(write(tmp_path / "bad.yaml", bad)))
    assert proc.returncode == 2
    assert "spec.model.uri" in proc.stderr and "spec.task.seed" in proc.stderr


def test_malformed_prompts_file_fails_every_rank_with_the_line(flux_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "fine"}\n{"prompt": "broken"\n')
    job = write(tmp_path / "job.yaml", manifest("badinput", str(flux_dir), {"uri": str(prompts)}))
    proc = kubeinfer("run", str(job), "--nproc", "2", "--output", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "spec.inputs.uri line 2: not valid JSON" in proc.stderr


def test_a_different_job_on_the_same_output_is_refused(flux_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = manifest("first", str(flux_dir), {"prompts": ["x"]}, seed=1)
    name, spec = parse_manifest(first)
    config = make_job_config(name, spec.model_copy(update={"output": spec.output.model_copy(update={"uri": str(out)})}))
    Ledger(ObjectStore(str(out))).claim(config, fingerprint(config, load_items(config.spec)))
    second = write(tmp_path / "job.yaml", manifest("second", str(flux_dir), {"prompts": ["x"]}, seed=2))
    proc = kubeinfer("run", str(second), "--nproc", "1", "--output", str(out))
    assert proc.returncode != 0
    assert "already holds outputs of job 'first' (different inputs, task)" in proc.stderr


def test_failed_items_are_recorded_and_success_policy_decides(flux_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "ok-1", "prompt": "a"}\n{"id": "bad", "prompt": "b", "no_such_argument": 1}\n'
                       '{"id": "ok-2", "prompt": "c"}\n')
    out = tmp_path / "out"
    strict = manifest("policy", str(flux_dir), {"uri": str(prompts)})
    proc = kubeinfer("run", str(write(tmp_path / "strict.yaml", strict)), "--nproc", "1", "--output", str(out))
    assert proc.returncode != 0
    assert "1 of 3 items failed, 2 succeeded; successPolicy.minSucceededRatio is 1.0" in proc.stderr
    assert "no_such_argument" in proc.stderr
    assert not (out / "_SUCCESS").exists()
    assert [e["id"] for e in manifest_lines((out / "manifest.jsonl").read_bytes())] == ["ok-1", "ok-2"]
    lenient = {**strict, "spec": {**strict["spec"], "successPolicy": {"minSucceededRatio": 0.6}}}
    proc = kubeinfer("run", str(write(tmp_path / "lenient.yaml", lenient)), "--nproc", "1", "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 items, 2 already committed, 1 to do" in proc.stderr, "only the failed item is retried"
    assert json.loads((out / "_SUCCESS").read_text())["failed"] == ["bad"]


def test_demo_manifest_is_the_example() -> None:
    from kubeinfer_runtime.demo import DEMO_MANIFEST

    assert yaml.safe_load(DEMO_MANIFEST.read_text()) == yaml.safe_load((REPO / "examples/local-demo.yaml").read_text())
    assert DEMO_MANIFEST.read_text() == (REPO / "examples/local-demo.yaml").read_text()
