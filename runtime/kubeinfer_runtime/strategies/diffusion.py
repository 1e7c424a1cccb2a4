"""Loading a diffusers pipeline from a spec and calling it for a batch of items (data, deviceMap, context).

Each item gets its own CPU `torch.Generator` seeded with `item.seed`, so its image depends on the
item alone: not on the rank, the batch neighbours' seeds or the device it runs on.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kubeinfer_api.spec import DistributedInferenceSpec, ModelSource, RuntimeOptions
from kubeinfer_runtime.strategies.base import Item
from kubeinfer_runtime.strategies.common import item_parameters, iter_batches, torch_dtype

#: Call arguments kubeinfer sets itself; a user value would break seeding or the one-image-per-item rule.
RESERVED = ("prompt", "generator", "output_type", "num_images_per_prompt", "return_dict", "latents")


def pipeline_class(model_dir: Path, source: ModelSource) -> Any:
    """The DiffusionPipeline subclass named by spec.model.pipeline or model_index.json, checked against the files."""
    import diffusers

    quiet_progress_bars()

    index_file = model_dir / "model_index.json"
    if not index_file.is_file():
        raise ValueError(f"spec.model.uri: {model_dir} has no model_index.json, so it is not a diffusers pipeline "
                         "(task.type text-to-image needs one)")
    index = json.loads(index_file.read_text())
    name = source.pipeline or index.get("_class_name", "")
    cls: Any = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise ValueError(f"spec.model.pipeline: {name!r} is not a diffusers pipeline class "
                         "(e.g. FluxPipeline, StableDiffusionPipeline); leave it unset to use model_index.json")
    signature_keys: Any = diffusers.DiffusionPipeline._get_signature_keys
    expected, _optional = signature_keys(cls)
    missing = sorted(set(expected) - set(index))
    if missing:
        raise ValueError(f"spec.model.pipeline: {name} needs components {missing} that {model_dir} does not have "
                         f"(its model_index.json describes a {index.get('_class_name')}); fix or unset it")
    return cls


def quiet_progress_bars() -> None:
    """diffusers' loading bars ignore HF_HUB_DISABLE_PROGRESS_BARS; they would bury the progress line. Here,
    not at start-up: importing diffusers costs a text-generation rank 3 s of CPU (it imports torch._dynamo)."""
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1":
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()


def load_pipeline(model_dir: Path, source: ModelSource, **overrides: Any) -> Any:
    """`from_pretrained` with the spec's class and dtype; `overrides` replace or drop components."""
    cls = pipeline_class(model_dir, source)
    return cls.from_pretrained(model_dir, dtype=torch_dtype(source.dtype), **overrides)


def check_call_parameters(cls: type[Any], params: dict[str, Any]) -> None:
    """Reject task.parameters the pipeline class does not take, before any compute."""
    reserved = sorted(set(params) & set(RESERVED))
    if reserved:
        raise ValueError(f"task.parameters: {reserved} are set by kubeinfer (prompts from inputs, seeds from "
                         "task.seed); remove them")
    signature = inspect.signature(cls.__call__)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return
    unknown = sorted(set(params) - set(signature.parameters))
    if unknown:
        raise ValueError(f"task.parameters: {cls.__name__} does not take {unknown}; "
                         f"it takes {sorted(set(signature.parameters) - set(RESERVED) - {'self'})}")


def generators(batch: list[Item]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(item.seed) for item in batch]


def generate_images(pipe: Any, batch: list[Item], params: dict[str, Any], **extra: Any) -> list[Any]:
    """One pipeline call for the batch; PIL images in item order (or latents with output_type=latent)."""
    output_type = extra.pop("output_type", "pil")
    with torch.inference_mode():
        out = pipe(prompt=[item.prompt for item in batch], generator=generators(batch), output_type=output_type,
                   num_images_per_prompt=1, **params, **extra)
    return list(out.images)


def denoiser(pipe: Any) -> Any:
    """The pipeline's denoising model (Flux and SD3 call it transformer, SD and SDXL unet)."""
    for name in ("transformer", "unet", "prior"):
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    return None


def apply_runtime(pipe: Any, options: RuntimeOptions, attention: bool = True) -> Any:
    """spec.runtime on a loaded pipeline, the one hook of every diffusers strategy: the attention backend of the
    denoiser (unless the strategy sets it itself: context), then `Module.compile` in place (the pipeline's
    components keep their types, so `.to()`, offloading and parallelism still work). Compilation happens on the
    first call; `warm_up` makes that call."""
    model = denoiser(pipe)
    if attention and options.attention_backend and model is not None:
        set_attention_backend(model, options.attention_backend)
    for target in compile_targets(pipe, options):
        target.compile(mode=options.compile.mode if options.compile else None,
                       fullgraph=bool(options.compile and options.compile.fullgraph))
    return pipe


def set_attention_backend(model: Any, backend: str) -> None:
    try:
        model.set_attention_backend(backend)
    except (RuntimeError, ValueError, ImportError) as err:
        raise ValueError(f"spec.runtime.attentionBackend: {backend} cannot run here: {err}") from None


def compile_targets(pipe: Any, options: RuntimeOptions) -> list[Any]:
    """The modules spec.runtime.compile names (the decoder is the VAE's `decoder`, which `vae.decode` calls)."""
    if options.compile is None:
        return []
    found = {"denoiser": denoiser(pipe), "decoder": getattr(getattr(pipe, "vae", None), "decoder", None)}
    missing = [name for name in options.compile.modules if found[name] is None]
    if missing:
        raise ValueError(f"spec.runtime.compile.modules: {type(pipe).__name__} has no {missing[0]} to compile")
    return [found[name] for name in dict.fromkeys(options.compile.modules)]


def warm_up(pipe: Any, spec: DistributedInferenceSpec, items: Sequence[Item]) -> None:
    """With compile: one call shaped like the job's first batch (its prompts, one step), so compilation is timed
    as warm-up, not as the first item; the output is discarded. Every rank calls it with the same items (context
    groups run it together). Without compile: nothing."""
    options = spec.runtime
    if options.compile is None or not items:
        return
    from kubeinfer_runtime import startup

    batch = next(iter_batches(items, spec.strategy.batch_size, spec.task.parameters))
    params = {**item_parameters(spec.task.parameters, batch[0]), "num_inference_steps": 1}
    with startup.warming_up():
        generate_images(pipe, batch, params, output_type="pil" if "decoder" in options.compile.modules else "latent")
