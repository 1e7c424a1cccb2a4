"""`auto`: pick the strategy from the model's size (safetensors headers, nothing loaded) and device memory.

Every rank computes the same answer from the same files and GPU model, so no communication is needed.
The rule itself is `kubeinfer_api.plan.resolve_auto`, shared with the operator.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import cast

import torch

from kubeinfer_api.jobconfig import JobConfig
from kubeinfer_api.plan import resolve_auto

FLOAT_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
_STORED_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def _header(path: Path) -> dict[str, dict[str, object]]:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, dict[str, object]] = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


def model_bytes(model_dir: Path, dtype: str) -> int:
    """Bytes the weights take once loaded in `dtype` (floating tensors are converted, others kept)."""
    files = sorted(model_dir.rglob("*.safetensors"))
    if not files:
        raise ValueError(f"spec.strategy.type: auto needs *.safetensors weights to size the model, and {model_dir} "
                         "has none; choose a strategy explicitly")
    total = 0
    for path in files:
        for tensor in _header(path).values():
            stored = str(tensor["dtype"])
            numel = math.prod(cast(list[int], tensor["shape"]))
            floating = stored.startswith(("F", "BF"))
            total += numel * (FLOAT_ITEMSIZE[dtype] if floating else _STORED_ITEMSIZE.get(stored, 4))
    return total


def device_memory(device: str) -> int | None:
    """Total memory of this process's GPU; None on CPU."""
    if not device.startswith("cuda"):
        return None
    return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)


def resolve_strategy(job: JobConfig, model_dir: Path, device: str) -> tuple[str, str]:
    """(strategy, explanation): the spec's own choice, or auto's resolution for this model and device."""
    spec = job.spec
    if spec.strategy.type != "auto":
        return spec.strategy.type, job.plan.explanation
    return resolve_auto(spec, model_bytes(model_dir, spec.model.dtype), device_memory(device))
