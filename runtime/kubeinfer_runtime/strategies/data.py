"""`data`: every process holds the whole model and computes its share of the batches.

Batches are cut from the global item list by window ([k*batchSize, (k+1)*batchSize)); the windows are
split between processes as accelerate's `split_between_processes` splits a list, and each batch is made
when it is reached; each item is seeded by its own seed, so outputs equal a single-process run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kubeinfer_runtime.strategies.base import Item, Result, Strategy, register
from kubeinfer_runtime.strategies.common import item_parameters, iter_batches, timed_results, windows_for_process
from kubeinfer_runtime.strategies.diffusion import check_call_parameters, generate_images, warm_up
from kubeinfer_runtime.strategies.textgen import generate_texts, generation_kwargs

Compute = Callable[[list[Item]], list[Any]]


def image_compute(pipe: Any, task_parameters: dict[str, Any], output_type: str = "pil") -> Compute:
    """Compute function for text-to-image; bad task.parameters fail here, before any item runs.

    `output_type="np"` gives float arrays instead of PIL images (tests compare them within 1e-5).
    """
    check_call_parameters(type(pipe), task_parameters)

    def compute(batch: list[Item]) -> list[Any]:
        params = item_parameters(task_parameters, batch[0])
        check_call_parameters(type(pipe), params)
        return generate_images(pipe, batch, params, output_type=output_type)

    return compute


def text_compute(model: Any, tokenizer: Any, task_parameters: dict[str, Any], device: str) -> Compute:
    generation_kwargs(task_parameters)

    def compute(batch: list[Item]) -> list[Any]:
        return generate_texts(model, tokenizer, batch, item_parameters(task_parameters, batch[0]), device)

    return compute


def run_batches(items: Sequence[Item], batch_size: int, task_parameters: dict[str, Any],
                compute: Compute) -> Iterator[Result]:
    """This process's share of the global batch windows (one replica per process), a batch at a time."""
    for batch in iter_batches(windows_for_process(items, batch_size), batch_size, task_parameters):
        yield from timed_results(batch, lambda batch=batch: compute(batch))  # type: ignore[misc]


@register
class DataParallel(Strategy):
    name = "data"
    compute: Compute
    pipe: Any = None
    warmed = False

    def load(self) -> None:
        from kubeinfer_runtime.strategies.diffusion import apply_runtime, load_pipeline
        from kubeinfer_runtime.strategies.textgen import load_lm

        spec, device = self.ctx.job.spec, self.ctx.dist.device
        if spec.task.type == "text-to-image":
            pipe = apply_runtime(load_pipeline(self.ctx.model_dir, spec.model).to(device), spec.runtime)
            pipe.set_progress_bar_config(disable=True)
            self.pipe = pipe
            self.compute = image_compute(pipe, spec.task.parameters, self.output_type)
        else:
            model, tokenizer = load_lm(self.ctx.model_dir, spec.model)
            self.compute = text_compute(model.to(device), tokenizer, spec.task.parameters, device)

    def run(self, items: Sequence[Item]) -> Iterator[Result]:
        spec = self.ctx.job.spec
        if spec.task.type == "text-to-image" and not self.warmed:  # once: an elastic worker runs chunk by chunk
            warm_up(self.pipe, spec, items)
            self.warmed = True
        yield from run_batches(items, spec.strategy.batch_size, spec.task.parameters, self.compute)
