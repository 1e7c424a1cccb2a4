"""spec.runtime (torch.compile, attention backend) through the real strategies on CPU, against eager diffusers.

Tolerance: compiled (inductor) and math-attention images may differ from eager by float reordering;
we accept 1e-3 absolute on images in [0, 1] (a quarter of one 8-bit level), far below any visible change.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from strategy_harness import job_json, make_items

from kubeinfer_api.jobconfig import JobConfig
from kubeinfer_api.spec import AttentionBackend, RuntimeOptions
from kubeinfer_runtime import startup
from kubeinfer_runtime.strategies import Item, RunContext, strategy_for
from kubeinfer_runtime.strategies.base import DistContext
from kubeinfer_runtime.strategies.diffusion import apply_runtime, load_pipeline

pytestmark = pytest.mark.runtime
TOLERANCE = 1e-3
PARAMS = {"num_inference_steps": 2, "height": 32, "width": 32, "max_sequence_length": 16}
ALONE = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device="cpu", backend="gloo")


def images(spec: dict[str, Any], model_dir: Path, items: list[dict[str, Any]]) -> list[np.ndarray]:
    """The strategy in this process, float images (output_type np) in item order."""
    full = {"model": {"uri": str(model_dir), "dtype": "float32"},
            "task": {"type": "text-to-image", "parameters": PARAMS}, **spec}
    with tempfile.TemporaryDirectory() as tmp:
        job = JobConfig.model_validate_json(job_json(full, Path(tmp) / "job.json").read_text())
    strategy = strategy_for(job.plan.strategy)(RunContext(job=job, dist=ALONE, model_dir=model_dir,
                                                          strategy=job.plan.strategy))
    strategy.output_type = "np"
    strategy.load()
    results = list(strategy.run([Item(**raw) for raw in items]))
    assert all(r.error is None for r in results), [r.error for r in results]
    return [np.asarray(r.output) for r in sorted(results, key=lambda r: r.item.index)]


def test_the_spec_offers_exactly_the_installed_backends() -> None:
    from typing import get_args

    from diffusers.models.attention_dispatch import AttentionBackendName

    assert set(get_args(AttentionBackend)) == {b.value for b in AttentionBackendName}


def test_a_backend_that_cannot_run_here_names_the_field(flux_dir: Path) -> None:
    pipe = load_pipeline(flux_dir, JobConfig.model_validate_json(
        job_json({"model": {"uri": str(flux_dir), "dtype": "float32"}}, Path(tempfile.mkdtemp()) / "j.json")
        .read_text()).spec.model)
    with pytest.raises(ValueError, match=r"spec.runtime.attentionBackend: flash cannot run here: .*flash-attn"):
        apply_runtime(pipe, RuntimeOptions(attention_backend="flash"))


# One batch of two: one shape, so each module compiles once. Compiling the Flux transformer costs about a
# minute on 2 CPU cores, so only the data strategy compiles it; the staged deviceMap path compiles the decoder.
@pytest.mark.parametrize(("strategy", "modules"), [({"type": "data", "batchSize": 2}, ["denoiser", "decoder"]),
                                                   ({"type": "deviceMap", "batchSize": 2}, ["decoder"])],
                         ids=["data", "deviceMap-staged"])
def test_compile_and_attention_backend_equal_eager(flux_dir: Path, strategy: dict[str, Any],
                                                   modules: list[str]) -> None:
    items = make_items(2)
    eager = images({"strategy": strategy}, flux_dir, items)
    clock = startup.set_clock(startup.StartupClock(0, 0, None))
    options = {"compile": {"modules": modules}, "attentionBackend": "_native_math"}
    compiled = images({"strategy": strategy, "runtime": options}, flux_dir, items)
    clock.mark("firstItem")
    for index, (a, b) in enumerate(zip(eager, compiled, strict=True)):
        assert a.shape == b.shape
        assert float(np.abs(a - b).max()) <= TOLERANCE, f"item {index} differs from eager"
    if strategy["type"] == "data":
        assert clock.record_.seconds["warmup"] > 0, "the compile warm-up is timed as its own phase"


def test_context_takes_its_backend_from_runtime_unless_it_names_one() -> None:
    from kubeinfer_api.validation import parse_spec
    from kubeinfer_runtime.strategies.context import context_backend

    def spec(context: str, runtime: str | None) -> Any:
        body = {"model": {"uri": "/m"}, "inputs": {"prompts": ["x"]}, "output": {"uri": "/o"},
                "workers": {"nodes": 2}, "strategy": {"type": "context",
                                                      "context": {"ulyssesDegree": 2, "attentionBackend": context}}}
        return parse_spec({**body, "runtime": {"attentionBackend": runtime}} if runtime else body)

    assert context_backend(spec("auto", None)) == "auto"
    assert context_backend(spec("auto", "_native_flash")) == "_native_flash"
    assert context_backend(spec("_native_flash", "_native_flash")) == "_native_flash"
    assert context_backend(spec("native", None)) == "native"
