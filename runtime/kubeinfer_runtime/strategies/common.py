"""Helpers every strategy shares: dtypes, per-item parameters, batching and sharding.

Batches are formed from the global item list *before* it is split between ranks, so a batch holds
the same items whatever the world size: outputs then match a single-process run bit for bit even
with batchSize > 1 (a batch of two is not bitwise equal to two batches of one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

import torch

from kubeinfer_runtime.strategies.base import Item, Result
from kubeinfer_runtime.windows import IndexView, window_view

T = TypeVar("T")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"spec.model.dtype: unsupported dtype {name!r}; use one of {sorted(DTYPES)}") from None


def item_parameters(task_parameters: dict[str, Any], item: Item) -> dict[str, Any]:
    """task.parameters overridden by the item's own (from the JSONL line)."""
    return {**task_parameters, **item.parameters}


def make_batches(items: Iterable[Item], batch_size: int, task_parameters: dict[str, Any]) -> list[list[Item]]:
    """Consecutive items of one global window [k*batch_size, (k+1)*batch_size) sharing identical call
    parameters (one pipeline call each): a batch never depends on which items are still pending."""
    return list(iter_batches(items, batch_size, task_parameters))


def iter_batches(items: Iterable[Item], batch_size: int, task_parameters: dict[str, Any]) -> Iterator[list[Item]]:
    """`make_batches` one batch at a time: only the batch in hand is made."""
    batch: list[Item] = []
    params: dict[str, Any] = {}
    for item in items:
        mine = item_parameters(task_parameters, item)
        if batch and batch[0].index // batch_size == item.index // batch_size and mine == params:
            batch.append(item)
            continue
        if batch:
            yield batch
        batch, params = [item], mine
    if batch:
        yield batch


def windows_for_process(items: Sequence[Item], window: int) -> Sequence[Item]:
    """This process's contiguous share of the batch windows `items` touch (accelerate's split of the
    windows, without making the items): a share never cuts a window, so batches stay whole."""
    import torch.distributed as dist

    if not dist.is_initialized():  # alone (one process, or an elastic worker that claims its own chunks)
        return items
    return windows_for_replica(items, window, dist.get_rank(), dist.get_world_size())


def windows_for_replica(items: Sequence[Item], window: int, index: int, count: int) -> Sequence[Item]:
    """Replica `index` of `count`'s contiguous share of the batch windows `items` touch (a replica is a
    process, or a group of ranks that computes each batch together)."""
    if isinstance(items, IndexView):
        numbers = [n for first, end in items.windows(window) for n in range(first, end)]
        mine = contiguous_shard(numbers, index, count)
        return window_view(items.items, [(n, n + 1) for n in mine], window) if mine else []
    present = sorted({item.index // window for item in items})
    chosen = set(contiguous_shard(present, index, count))
    return [item for item in items if item.index // window in chosen]


def in_groups(batches: Iterable[T], size: int) -> Iterator[list[T]]:
    """`batches` `size` at a time (the last group may be shorter)."""
    rest = iter(batches)
    while group := list(islice(rest, size)):
        yield group


def contiguous_shard(units: Sequence[T], index: int, count: int) -> Sequence[T]:
    """The same contiguous split as accelerate's, for replicas that are groups of ranks (a slice: a view
    of a view, a list of a list)."""
    per, extra = divmod(len(units), count)
    start = index * per + min(index, extra)
    return units[start:start + per + (1 if index < extra else 0)]


def timed_results(batch: Sequence[Item], compute: Callable[[], list[Any]]) -> Iterator[Result]:
    """Run one batch; a failure becomes an error Result for each of its items (successPolicy decides)."""
    start = time.perf_counter()
    try:
        outputs = compute()
    except (RuntimeError, ValueError, TypeError) as err:
        seconds = (time.perf_counter() - start) / len(batch)
        for item in batch:
            yield Result(item=item, error=f"{type(err).__name__}: {err}", seconds=seconds)
        return
    seconds = (time.perf_counter() - start) / len(batch)
    for item, output in zip(batch, outputs, strict=True):
        yield Result(item=item, output=output, seconds=seconds)
