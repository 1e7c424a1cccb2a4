"""Cold start on the cluster: a 3-worker job reads its model from S3 about once (weight fan-out between the
pods), a job with `spec.model.cache` fills the cache and the next one reads nothing; the start-up phases and
bytes by source are in `kubectl get dinf -o yaml`; every job's images equal plain diffusers.

Bytes are counted at the server (MinIO's per-bucket `traffic_sent_bytes`), each scenario with its own bucket.
Tiny Flux, 32x32, 2 steps: the three jobs take a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import copy
import io
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from e2e.support.cluster import Cluster, Manifest
from e2e.support.jobs import for_test, job_outputs, launch, load_example
from e2e.support.policies import CACHE_HOST_DIR
from localcluster.s3_traffic import settled_bytes_sent

pytestmark = pytest.mark.e2e
JOB_TIMEOUT = 600
PROMPTS = ["a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen"]


def upload_model(cluster: Cluster, folder: Path) -> tuple[str, int]:
    """The tiny Flux model in a bucket of its own (so the server's count is this scenario's alone)."""
    s3, bucket = cluster.backend.s3_client(), f"coldstart-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    for path in files:
        s3.upload_file(str(path), bucket, f"tiny-flux/{path.relative_to(folder).as_posix()}")
    return bucket, sum(p.stat().st_size for p in files)


def job(name: str, namespace: str, bucket: str, nodes: int, cache: str | None = None) -> Manifest:
    manifest = copy.deepcopy(load_example("data-text-to-image"))
    manifest["metadata"]["name"] = name
    spec = manifest["spec"]
    spec["model"]["uri"] = f"s3://{bucket}/tiny-flux"
    if cache:
        spec["model"]["cache"] = {"hostPath": cache}
    spec["inputs"]["prompts"] = PROMPTS
    spec["workers"]["nodes"] = nodes
    spec.pop("ttlSecondsAfterFinished", None)
    return for_test(manifest, namespace)


def reference_pixels(model: Path, params: dict[str, Any], seed: int) -> list[np.ndarray]:
    """Plain diffusers on the model folder itself: what the user's own loop would render."""
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    out = []
    for index, prompt in enumerate(PROMPTS):
        with torch.inference_mode():
            image = pipe(prompt=[prompt], generator=[torch.Generator("cpu").manual_seed(seed + index)],
                         **params).images[0]
        out.append(np.asarray(image.convert("RGB"), dtype=np.int16))
    return out


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def startup(cluster: Cluster, name: str, namespace: str) -> dict[str, Any]:
    """status.startup as `kubectl get dinf -o yaml` shows it."""
    shown = yaml.safe_load(cluster.kubectl("get", "dinf", name, "-n", namespace, "-o", "yaml").stdout)
    found: dict[str, Any] = shown["status"]["startup"]
    return found


@pytest.mark.long(seconds=75)
def test_fan_out_reads_the_model_once_and_the_cache_makes_it_zero(
        operator: Cluster, job_namespace: str, tiny_models: dict[str, Path]) -> None:
    cache_dir = CACHE_HOST_DIR / f"model-cache-{uuid.uuid4().hex[:8]}"  # allowed by the job-author policy
    cache_dir.mkdir(parents=True)
    cache_dir.chmod(0o777)  # the workers run as uid 1000; a node admin would prepare the directory alike
    try:
        run_jobs(operator, job_namespace, tiny_models["flux"], cache_dir)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def run_jobs(operator: Cluster, job_namespace: str, model: Path, cache_dir: Path) -> None:
    env = operator.backend.s3_host_env()
    fanout_bucket, model_bytes = upload_model(operator, model)
    cache_bucket, _ = upload_model(operator, model)
    jobs = {"fanout": job("fanout", job_namespace, fanout_bucket, nodes=3),
            "fill": job("fill-cache", job_namespace, cache_bucket, nodes=1, cache=str(cache_dir)),
            "cached": job("from-cache", job_namespace, cache_bucket, nodes=1, cache=str(cache_dir))}
    launch(operator, job_namespace, jobs["fanout"])
    launch(operator, job_namespace, jobs["fill"])
    names = {key: str(m["metadata"]["name"]) for key, m in jobs.items()}
    operator.wait_condition(names["fill"], job_namespace, "Complete", JOB_TIMEOUT)
    filled = settled_bytes_sent(env, cache_bucket)
    launch(operator, job_namespace, jobs["cached"])
    for key in ("fanout", "cached"):
        operator.wait_condition(names[key], job_namespace, "Complete", JOB_TIMEOUT)

    listing = 16 * 1024  # each pod lists the model twice (launcher and rank); no object bytes
    fanout_sent = settled_bytes_sent(env, fanout_bucket)
    assert model_bytes <= fanout_sent < model_bytes + 3 * listing, f"3 pods made S3 send {fanout_sent} bytes"
    assert model_bytes <= filled < model_bytes + listing
    assert settled_bytes_sent(env, cache_bucket) - filled < listing, "the cached job read objects from S3"

    fanout = startup(operator, names["fanout"], job_namespace)
    assert (fanout["ranksReported"], fanout["modelBytes"]) == (3, model_bytes)
    assert (fanout["bytesFromStorage"], fanout.get("bytesFromPeers")) == (model_bytes, 2 * model_bytes)
    assert fanout["totalSeconds"] > 0 and fanout["rendezvousSeconds"] > 0 and fanout["loadSeconds"] > 0
    assert fanout["downloadSeconds"] > 0, "the launchers' downloads are reported"
    cached = startup(operator, names["cached"], job_namespace)
    assert (cached.get("bytesFromStorage", 0), cached["bytesFromCache"]) == (0, model_bytes)

    spec = jobs["fanout"]["spec"]
    reference = reference_pixels(model, spec["task"]["parameters"], spec["task"]["seed"])
    outputs = {key: job_outputs(operator, job_namespace, name) for key, name in names.items()}
    for key, run in outputs.items():
        assert sorted(run.items) == [f"{i:05d}" for i in range(len(PROMPTS))], key
        for index, item in enumerate(sorted(run.items)):
            assert run.items[item] == outputs["fanout"].items[item], f"{key} {item} differs from the fan-out job"
            diff = int(np.abs(pixels(run.items[item]) - reference[index]).max())
            assert diff <= 1, f"{key} {item} differs from plain diffusers by {diff} levels"
