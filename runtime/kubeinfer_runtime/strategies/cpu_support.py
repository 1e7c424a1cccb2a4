"""Two narrow patches that let diffusers' context parallelism run on CPU/gloo (diffusers 0.42.1).

1. `_resolve_parallel_config` computes `rank % torch.accelerator.device_count()`, which is 0 without
   an accelerator (ZeroDivisionError). `nonzero_device_count` makes it 1 only while
   `enable_parallelism` runs, and only on CPU; the device it computes is unused there.
2. Ring attention needs an attention op that returns the log-sum-exp. `native` refuses and
   `_native_flash` calls a CUDA-only kernel; torch's CPU flash kernel
   (`aten._scaled_dot_product_flash_attention_for_cpu`) returns both. `enable_cpu_flash_lse` routes
   `_native_flash`'s forward op to it for CPU tensors; CUDA tensors keep the original op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


@contextlib.contextmanager
def nonzero_device_count(active: bool) -> Iterator[None]:
    original = torch.accelerator.device_count
    if active and original() == 0:
        torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def _cpu_flash_forward_op(original: Any) -> Any:
    def forward_op(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                   scale: float | None = None, enable_gqa: bool = False, return_lse: bool = False,
                   _save_ctx: bool = True, _parallel_config: Any = None) -> Any:
        if query.device.type != "cpu":
            return original(ctx, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, return_lse,
                            _save_ctx, _parallel_config)
        # diffusers' layout is (batch, seq, heads, dim); the kernel's is (batch, heads, seq, dim).
        q, k, v = (x.transpose(1, 2).contiguous() for x in (query, key, value))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)
        out, lse = out.transpose(1, 2).contiguous(), lse.transpose(1, 2).contiguous()
        return (out, lse) if return_lse else out

    forward_op.kubeinfer_cpu_patch = True  # type: ignore[attr-defined]
    return forward_op


def enable_cpu_flash_lse() -> None:
    """Idempotent: `_native_flash_attention` looks its forward op up in the module at call time."""
    from diffusers.models import attention_dispatch

    current = attention_dispatch._native_flash_attention_forward_op
    if not getattr(current, "kubeinfer_cpu_patch", False):
        attention_dispatch._native_flash_attention_forward_op = _cpu_flash_forward_op(current)
