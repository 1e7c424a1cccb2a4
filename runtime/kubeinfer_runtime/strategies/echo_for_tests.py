"""TEST ONLY: a stand-in model that answers in microseconds, so a benchmark measures the framework alone.

Enabled only by `KUBEINFER_TEST_ONLY_ECHO_MODEL=1` in the ranks' environment (the operator never sets
it); no model is fetched or loaded. Text-generation jobs: each item's output is its prompt, echoed.
Work is split like `data` (contiguous shares of the pending items).
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Iterator, Sequence
from pathlib import Path

from kubeinfer_runtime import storage
from kubeinfer_runtime.strategies.base import Item, Result, Strategy
from kubeinfer_runtime.strategies.common import contiguous_shard

ENV = "KUBEINFER_TEST_ONLY_ECHO_MODEL"
STATS_ENV = "KUBEINFER_TEST_ONLY_STATS_DIR"  # where each rank leaves its storage requests and peak RSS


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def write_stats(rank: int) -> None:
    """The rank's storage operations and peak RSS, for bench/items_scale.py (when STATS_ENV names a folder)."""
    folder = os.environ.get(STATS_ENV)
    if not folder:
        return
    stats = {"rank": rank, "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
             "requests": {f"{verb} {kind}": n for (verb, kind), n in sorted(storage.REQUESTS.items())}}
    Path(folder, f"rank-{rank}.json").write_text(json.dumps(stats, indent=1))


class EchoForTests(Strategy):
    name = "echo-for-tests"

    def load(self) -> None:
        if self.ctx.job.spec.task.type != "text-generation":
            raise ValueError(f"{ENV}: the echo stand-in answers text-generation jobs only")

    def run(self, items: Sequence[Item]) -> Iterator[Result]:
        for item in contiguous_shard(items, self.ctx.dist.rank, self.ctx.dist.world_size):
            yield Result(item=item, output=f"echo: {item.prompt}")
