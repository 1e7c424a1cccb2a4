"""Strategies register themselves in `base.STRATEGIES` on import; `strategy_for(name)` finds them."""

from __future__ import annotations

from kubeinfer_runtime.strategies import context, data, device_map, pipeline  # noqa: F401  (registration)
from kubeinfer_runtime.strategies.base import STRATEGIES, Item, Result, RunContext, Strategy, strategy_for

__all__ = ["STRATEGIES", "Item", "Result", "RunContext", "Strategy", "strategy_for"]
