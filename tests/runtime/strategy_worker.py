"""Run under torchrun by the tests: load one strategy once, run several item lists, pickle this rank's results.

argv: JOB_JSON MODEL_DIR CASES_JSON OUT_DIR. Each rank writes OUT_DIR/rank<N>.pkl with
{"load_error": str | None, "cases": {name: [(index, output, error), ...]}, "probe": Any}; images become
uint8 arrays. Test hooks, each `module:function` of a test module, called with the strategy:
KUBEINFER_TEST_AFTER_LOAD (e.g. to inject a failure on one rank) and KUBEINFER_TEST_PROBE (after the
cases; its return value is the report's "probe").
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from kubeinfer_api.jobconfig import load_job_config
from kubeinfer_runtime.distributed import init_distributed, shutdown_distributed
from kubeinfer_runtime.strategies import Item, RunContext, strategy_for


def _plain(output: Any) -> Any:
    return output if output is None or isinstance(output, str) else np.asarray(output)


def _hook(variable: str) -> Any:
    module, _, function = os.environ.get(variable, "").partition(":")
    return getattr(importlib.import_module(module), function) if module else None


def main() -> None:
    job_file, model_dir, cases_file, out_dir = sys.argv[1:5]
    job = load_job_config(job_file)
    dist = init_distributed(job.spec.rendezvous.backend, timeout_s=120)
    report: dict[str, Any] = {"load_error": None, "cases": {}, "dist": dist, "probe": None}
    after_load, probe = _hook("KUBEINFER_TEST_AFTER_LOAD"), _hook("KUBEINFER_TEST_PROBE")
    try:
        strategy = strategy_for(job.plan.strategy)(RunContext(job=job, dist=dist, model_dir=Path(model_dir),
                                                              strategy=job.plan.strategy))
        if "KUBEINFER_TEST_IMAGE_OUTPUT" in os.environ:  # "np": float images, for tolerance comparisons
            strategy.output_type = os.environ["KUBEINFER_TEST_IMAGE_OUTPUT"]
        strategy.load()
        if after_load:
            after_load(strategy)
        for name, raw_items in json.loads(Path(cases_file).read_text()).items():
            items = [Item(**raw) for raw in raw_items]
            report["cases"][name] = [(r.item.index, _plain(r.output), r.error) for r in strategy.run(items)]
        if probe:
            report["probe"] = probe(strategy)
    except Exception as err:  # the test asserts on the message
        report["load_error"] = f"{type(err).__name__}: {err}"
        traceback.print_exc()
    Path(out_dir, f"rank{dist.rank}.pkl").write_bytes(pickle.dumps(report))
    shutdown_distributed()


if __name__ == "__main__":
    main()
