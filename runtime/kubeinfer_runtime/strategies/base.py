"""The one small interface every strategy implements, and the registry that finds them.

A strategy gets the whole list of pending items (identical on every rank), decides which items this
rank computes, and yields a Result for each item whose output this rank owns (e.g. only the last
pipeline stage, or the leader of a context-parallel group). Encoding, upload, ledger and progress
are the caller's job, so strategies only compute.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kubeinfer_api.jobconfig import JobConfig


@dataclass(frozen=True, slots=True)
class Item:
    """One unit of work. `index` is its global position; `id` names its output; `seed` = task.seed + index."""

    index: int
    id: str
    prompt: str
    seed: int
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """A finished item: `output` is a PIL image (text-to-image) or a str (text-generation), or `error`."""

    item: Item
    output: Any = None
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: filled by kubeinfer_runtime.distributed.init_distributed()."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: str  # "cpu" or "cuda:N"
    backend: str  # "gloo" or "nccl"


@dataclass(frozen=True)
class RunContext:
    job: JobConfig
    dist: DistContext
    model_dir: Path  # a local directory (downloaded/cached by the caller)
    strategy: str  # the resolved strategy (never "auto")


class Strategy:
    """Base class: subclasses set `name`, load the model in `load`, compute in `run`."""

    name: ClassVar[str]
    #: text-to-image results: "pil" (PIL images); "np" gives float arrays, for tolerance comparisons in tests.
    output_type: str = "pil"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def load(self) -> None:
        raise NotImplementedError

    def run(self, items: Sequence[Item]) -> Iterator[Result]:
        raise NotImplementedError


STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available under its `name`."""
    STRATEGIES[cls.name] = cls
    return cls


#: The modules whose classes `register` themselves; imported on first use (they import torch).
STRATEGY_MODULES = ("context", "data", "device_map", "pipeline")


def strategy_for(name: str) -> Callable[[RunContext], Strategy]:
    for module in STRATEGY_MODULES:
        importlib.import_module(f"kubeinfer_runtime.strategies.{module}")
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"spec.strategy.type: unknown strategy {name!r}; known: {sorted(STRATEGIES)}") from None
