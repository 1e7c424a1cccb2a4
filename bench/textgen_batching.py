"""Batched text generation: tokens/s with batchSize 8 (or others) vs 1 on the tiny test LM, same script.

Both runs go through the runtime's own compute (`data` strategy: `text_compute` over `make_batches`)
on the same 64 prompts, with every continuation forced to the same length (`min_new_tokens` =
`max_new_tokens`), so both generate exactly the same number of tokens. The figure is the ratio of the
two rates (best of `--repeats`). Prints a table and writes `<--out>.{json,md}`
(bench/results/textgen_batching by default; the GPU run's is bench/results/textgen_batching_gpu).

    python bench/textgen_batching.py [--prompts 64] [--new-tokens 32] [--repeats 3] [--device cuda:0]
        [--batch-sizes 1 8 64] [--out bench/results/textgen_batching_gpu]
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

import torch  # noqa: E402
from strategy_harness import PROMPTS  # noqa: E402

from kubeinfer_api.spec import ModelSource  # noqa: E402
from kubeinfer_runtime.strategies.base import Item  # noqa: E402
from kubeinfer_runtime.strategies.common import make_batches  # noqa: E402
from kubeinfer_runtime.strategies.data import text_compute  # noqa: E402
from kubeinfer_runtime.strategies.textgen import load_lm  # noqa: E402
from kubeinfer_runtime.tinymodels import cached  # noqa: E402


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
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="the first is the baseline")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "textgen_batching")
    args = parser.parse_args()
    model_dir = cached("gpt2")
    model, tokenizer = load_lm(model_dir, ModelSource(uri=str(model_dir), dtype="float32"))
    params = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
    compute = text_compute(model.to(args.device), tokenizer, params, args.device)
    items = [Item(index=i, id=f"item-{i}", prompt=PROMPTS[i % len(PROMPTS)], seed=i) for i in range(args.prompts)]
    tokens = args.prompts * args.new_tokens
    compute(items[:1])  # the first call pays one-time costs (a GPU's kernels, caches) outside the timing
    rates = {size: tokens_per_second(compute, items, size, tokens, args.repeats) for size in args.batch_sizes}
    base = args.batch_sizes[0]
    gains = {size: rate / rates[base] for size, rate in rates.items()}
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    result = {"device": where, "torch": torch.__version__, "prompts": args.prompts, "new_tokens": args.new_tokens,
              "tokens_per_s": rates, f"gain_vs_{base}": gains}
    table = (f"| batchSize | tokens/s | vs {base} |\n|---:|---:|---:|\n"
             + "".join(f"| {size} | {rates[size]:,.0f} | {gains[size]:.2f}x |\n" for size in rates)
             + f"\n{args.prompts} prompts x {args.new_tokens} new tokens, tiny GPT-2, {where}\n")
    print(table)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()
