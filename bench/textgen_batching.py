"""Batched text generation on CPU: tokens/s with batchSize 8 vs 1 on the tiny test LM, same script.

Both runs go through the runtime's own compute (`data` strategy: `text_compute` over `make_batches`)
on the same 64 prompts, with every continuation forced to the same length (`min_new_tokens` =
`max_new_tokens`), so both generate exactly the same number of tokens. The figure is the ratio of the
two rates (best of `--repeats`). Prints a table and writes bench/results/textgen_batching.{json,md}.

    python bench/textgen_batching.py [--prompts 64] [--new-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in ("api", "runtime", "tests/runtime"):
    sys.path.insert(0, str(REPO / folder))

from strategy_harness import PROMPTS  # noqa: E402

from kubeinfer_api.spec import ModelSource  # noqa: E402
from kubeinfer_runtime.strategies.base import Item  # noqa: E402
from kubeinfer_runtime.strategies.common import make_batches  # noqa: E402
from kubeinfer_runtime.strategies.data import text_compute  # noqa: E402
from kubeinfer_runtime.strategies.textgen import load_lm  # noqa: E402
from kubeinfer_runtime.tinymodels import cached  # noqa: E402

BATCH_SIZES = (1, 8)


def tokens_per_second(compute: object, items: list[Item], batch_size: int, tokens: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for batch in make_batches(items, batch_size, {}):
            compute(batch)  # type: ignore[operator]
        best = min(best, time.perf_counter() - began)
    return tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_dir = cached("gpt2")
    model, tokenizer = load_lm(model_dir, ModelSource(uri=str(model_dir), dtype="float32"))
    params = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
    compute = text_compute(model, tokenizer, params, "cpu")
    items = [Item(index=i, id=f"item-{i}", prompt=PROMPTS[i % len(PROMPTS)], seed=i) for i in range(args.prompts)]
    tokens = args.prompts * args.new_tokens
    rates = {size: tokens_per_second(compute, items, size, tokens, args.repeats) for size in BATCH_SIZES}
    gain = rates[8] / rates[1]
    result = {"prompts": args.prompts, "new_tokens": args.new_tokens, "tokens_per_s": rates, "gain_8_vs_1": gain}
    table = ("| batchSize | tokens/s |\n|---:|---:|\n"
             + "".join(f"| {size} | {rate:,.0f} |\n" for size, rate in rates.items())
             + f"\nbatch 8 vs 1: **{gain:.2f}x** ({args.prompts} prompts x {args.new_tokens} new tokens, tiny GPT-2, "
             "CPU)\n")
    print(table)
    out = REPO / "bench" / "results"
    (out / "textgen_batching.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "textgen_batching.md").write_text(table)


if __name__ == "__main__":
    main()
