"""Strategies register themselves in `base.STRATEGIES` when `strategy_for` first imports them.

Nothing here imports torch: the worker's outer process (which only runs torchrun), the CLI's
`validate` and the input readers use `Item` without paying for torch and diffusers.
"""

from __future__ import annotations

from kubeinfer_runtime.strategies.base import STRATEGIES, Item, Result, RunContext, Strategy, strategy_for

__all__ = ["STRATEGIES", "Item", "Result", "RunContext", "Strategy", "strategy_for"]
