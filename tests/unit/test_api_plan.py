"""Planning: layout, groups and the auto strategy."""

from __future__ import annotations

from typing import Any

import pytest

from kubeinfer_api.plan import build_plan, resolve_auto
from kubeinfer_api.validation import parse_spec

GIB = 1024**3


def spec(**fields: Any) -> Any:
    raw = {"model": {"uri": "/m"}, "inputs": {"prompts": ["x"]}, "output": {"uri": "/o"}, **fields}
    return parse_spec(raw)


@pytest.mark.parametrize(("fields", "world", "groups", "group_size", "backend"), [
    ({}, 1, 1, 1, "gloo"),
    ({"workers": {"nodes": 2, "gpusPerNode": 4}}, 8, 8, 1, "nccl"),
    ({"workers": {"nodes": 2, "processesPerNode": 2}}, 4, 4, 1, "gloo"),
    ({"workers": {"nodes": 3, "gpusPerNode": 8}, "strategy": {"type": "deviceMap"}}, 3, 3, 1, "nccl"),
    ({"workers": {"nodes": 2, "gpusPerNode": 4}, "strategy": {"type": "context", "context": {"ringDegree": 2,
      "ulyssesDegree": 2}}}, 8, 2, 4, "nccl"),
    ({"workers": {"nodes": 2}, "task": {"type": "text-generation"}, "strategy": {"type": "pipeline"}}, 2, 1, 2, "gloo"),
])
def test_layouts(fields: dict[str, Any], world: int, groups: int, group_size: int, backend: str) -> None:
    plan = build_plan(spec(**fields))
    assert (plan.world_size, plan.groups, plan.group_size, plan.backend) == (world, groups, group_size, backend)
    assert plan.explanation


def test_auto_prefers_data_parallel_when_the_model_fits() -> None:
    assert resolve_auto(spec(), 10 * GIB, 80 * GIB)[0] == "data"
    assert resolve_auto(spec(), 10 * GIB, None)[0] == "data"


def test_auto_spreads_a_big_diffusion_model_over_a_node() -> None:
    name, why = resolve_auto(spec(workers={"nodes": 1, "gpusPerNode": 4, "processesPerNode": 1}), 100 * GIB, 80 * GIB)
    assert name == "deviceMap" and "exceed one device" in why


def test_auto_will_not_spread_a_model_from_every_process_of_a_pod() -> None:
    with pytest.raises(ValueError, match=r"set workers\.processesPerNode: 1"):
        resolve_auto(spec(workers={"nodes": 1, "gpusPerNode": 4}), 100 * GIB, 80 * GIB)


def test_auto_pipelines_a_big_language_model() -> None:
    s = spec(workers={"nodes": 2, "gpusPerNode": 1}, task={"type": "text-generation"})
    assert resolve_auto(s, 100 * GIB, 80 * GIB)[0] == "pipeline"


def test_auto_says_what_to_add_when_nothing_fits() -> None:
    with pytest.raises(ValueError, match="add GPUs"):
        resolve_auto(spec(workers={"nodes": 1, "gpusPerNode": 1}), 100 * GIB, 80 * GIB)
