"""`deviceMap`: one process per pod, the model spread over the pod's GPUs; pods are data-parallel replicas.

Placement is accelerate's (`balanced`, `auto`, `sequential`) under `maxMemory`. Flux-family
pipelines load in stages (see `staged`) so that a pipeline larger than one GPU runs; other
diffusers pipelines and causal LMs load once with `device_map`. On CPU every placement puts
everything on `cpu` (accelerate has nothing else to use), and outputs equal the plain pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from kubeinfer_runtime.strategies import staged
from kubeinfer_runtime.strategies.base import Item, Result, Strategy, register
from kubeinfer_runtime.strategies.common import (
    in_groups,
    item_parameters,
    iter_batches,
    timed_results,
    windows_for_process,
)
from kubeinfer_runtime.strategies.data import Compute, image_compute, run_batches, text_compute
from kubeinfer_runtime.strategies.diffusion import (
    apply_runtime,
    check_call_parameters,
    load_pipeline,
    pipeline_class,
    warm_up,
)

#: Batches per stage cycle: bounds the embeddings/latents held in memory and the work a crash loses.
WAVE_BATCHES = 16


def parse_max_memory(raw: dict[str, str], gpus: int) -> dict[int | str, str]:
    """spec keys ("0", "1", "cpu") to accelerate's (0, 1, "cpu"); GPUs this pod does not have are dropped."""
    out: dict[int | str, str] = {}
    for key, value in raw.items():
        if key.isdigit():
            if int(key) < gpus:
                out[int(key)] = value
        elif key in ("cpu", "disk"):
            out[key] = value
        else:
            raise ValueError(f"spec.strategy.deviceMap.maxMemory: key {key!r} must be a GPU index (0, 1, ...) or cpu")
    return out


@register
class DeviceMap(Strategy):
    name = "deviceMap"
    compute: Compute | None = None
    pipe: Any = None

    def load(self) -> None:
        """Validate everything and, when not staging, load once; staged models load per wave in `run`."""
        from kubeinfer_runtime.strategies.textgen import load_lm

        spec, device = self.ctx.job.spec, self.ctx.dist.device
        options = spec.strategy.device_map
        self.placement = options.placement if options else "balanced"
        gpus = torch.cuda.device_count() if device != "cpu" else 0
        self.max_memory = parse_max_memory(options.max_memory if options else {}, gpus)
        kwargs: dict[str, Any] = {"device_map": self.placement if gpus else "cpu"}
        if self.max_memory:
            kwargs["max_memory"] = self.max_memory
        self.model_kwargs = kwargs
        if spec.task.type == "text-generation":
            model, tokenizer = load_lm(self.ctx.model_dir, spec.model, **kwargs)
            self.compute = text_compute(model, tokenizer, spec.task.parameters, str(model.device))
            return
        self.pipeline_cls = pipeline_class(self.ctx.model_dir, spec.model)
        check_call_parameters(self.pipeline_cls, spec.task.parameters)
        # diffusers pipelines accept only "balanced" as a pipeline-level device_map.
        self.pipeline_kwargs = {**kwargs, "device_map": "balanced"} if gpus else {}
        staging = options is None or options.staged_loading
        if not (staging and staged.supports_staging(self.pipeline_cls, spec.task.parameters)):
            pipe = load_pipeline(self.ctx.model_dir, spec.model, **self.pipeline_kwargs)
            if not gpus:
                pipe.to(device)
            pipe.set_progress_bar_config(disable=True)
            self.pipe = apply_runtime(pipe, spec.runtime)
            self.compute = image_compute(pipe, spec.task.parameters, self.output_type)

    def run(self, items: Sequence[Item]) -> Iterator[Result]:
        spec = self.ctx.job.spec
        batch_size = spec.strategy.batch_size
        if self.compute is not None:
            if self.pipe is not None:
                warm_up(self.pipe, spec, items)
            yield from run_batches(items, batch_size, spec.task.parameters, self.compute)
            return
        batches = iter_batches(windows_for_process(items, batch_size), batch_size, spec.task.parameters)
        for wave in in_groups(batches, WAVE_BATCHES):
            yield from self._wave(wave)

    def _wave(self, wave: list[list[Item]]) -> Iterator[Result]:
        """The three stages over a wave; a failure fails the wave's items (the models are shared)."""
        yield from timed_results([item for batch in wave for item in batch], lambda: self._stages(wave))

    def _stages(self, wave: list[list[Item]]) -> list[Any]:
        spec, device, model_dir = self.ctx.job.spec, self.ctx.dist.device, self.ctx.model_dir
        params = [item_parameters(spec.task.parameters, batch[0]) for batch in wave]
        for p in params:
            check_call_parameters(self.pipeline_cls, p)
        with torch.inference_mode():
            embeds = staged.encode(model_dir, spec.model, wave, params, device, self.pipeline_kwargs)
            latents = staged.denoise(model_dir, spec.model, wave, params, embeds, self.model_kwargs, device,
                                     spec.runtime)
            images = staged.decode(model_dir, spec.model, latents, params, device, self.output_type, spec.runtime)
        return [image for batch in images for image in batch]
