"""spec.runtime: compile and attention backend are validated by the CRD (CEL) and the same rules in Python."""

from __future__ import annotations

import pytest
from unit.builders import JobBuilder

from kubeinfer_api.crd import build_crd
from kubeinfer_api.spec import IMMUTABLE_FIELDS
from kubeinfer_api.validation import SpecError


def spec_rules() -> list[str]:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return [r["message"] for r in schema["x-kubernetes-validations"]]


def test_defaults_are_eager_and_the_library_backend() -> None:
    runtime = JobBuilder().spec().runtime
    assert runtime.compile is None and runtime.attention_backend is None
    compiled = JobBuilder().set("runtime.compile", {}).spec().runtime.compile
    assert compiled is not None and (compiled.mode, compiled.modules, compiled.fullgraph) == (
        "default", ["denoiser"], False)
    assert "runtime" in IMMUTABLE_FIELDS


@pytest.mark.parametrize(("path", "value", "message"), [
    ("runtime.attentionBackend", "flash_attention_9", r"spec.runtime.attentionBackend: Input should be"),
    ("runtime.compile", {"mode": "fast"}, r"spec.runtime.compile.mode: Input should be"),
    ("runtime.compile", {"modules": ["encoder"]}, r"spec.runtime.compile.modules\[0\]: Input should be"),
    ("runtime.compile", {"modules": []}, r"spec.runtime.compile.modules: List should have at least 1 item"),
])
def test_bad_values_name_the_field(path: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        JobBuilder().set(path, value).spec()


def test_text_generation_takes_no_diffusers_options() -> None:
    with pytest.raises(SpecError, match=r"spec.runtime: compile and attentionBackend apply to diffusers pipelines"):
        JobBuilder().task("text-generation").set("runtime.compile", {}).spec()
    assert any("runtime.compile and runtime.attentionBackend apply to diffusers" in m for m in spec_rules())


def test_one_attention_backend_for_context() -> None:
    job = JobBuilder().nodes(2).strategy("context", ulysses=2).set("runtime.attentionBackend", "_native_flash")
    assert job.spec().runtime.attention_backend == "_native_flash"  # context's own field left auto
    job.set("strategy.context.attentionBackend", "_native_flash")
    assert job.spec().strategy.context is not None  # the same value twice is fine
    with pytest.raises(SpecError, match=r"spec.runtime.attentionBackend: _native_flash differs from "
                                        r"strategy.context.attentionBackend native; set the backend once"):
        job.set("strategy.context.attentionBackend", "native").spec()
    assert any("runtime.attentionBackend and strategy.context.attentionBackend differ" in m for m in spec_rules())
