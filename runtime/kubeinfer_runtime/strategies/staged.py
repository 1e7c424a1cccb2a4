"""Staged loading for Flux-family pipelines (the diffusers "device_map" recipe).

Only one big component is in memory at a time: text encoders -> prompt embeddings -> free ->
transformer spread with `device_map` -> latents -> free -> VAE decode. Each stage runs over a
whole wave of batches, so each model is loaded once per wave, not once per batch. The arithmetic
between stages is the pipeline's own (`_unpack_latents`, scaling, `postprocess`), so images equal
a plain pipeline call.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import torch

from kubeinfer_api.spec import ModelSource, RuntimeOptions
from kubeinfer_runtime.strategies.base import Item
from kubeinfer_runtime.strategies.common import torch_dtype
from kubeinfer_runtime.strategies.diffusion import apply_runtime, generators, load_pipeline

#: Pipelines whose `encode_prompt` returns (prompt_embeds, pooled_prompt_embeds, text_ids).
STAGED_PIPELINES = ("FluxPipeline",)
UNSTAGED_PARAMETERS = ("negative_prompt", "negative_prompt_2", "true_cfg_scale", "prompt_2")
TEXT_COMPONENTS = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")


def supports_staging(pipeline_class: type[Any], params: dict[str, Any]) -> bool:
    return pipeline_class.__name__ in STAGED_PIPELINES and not set(params) & set(UNSTAGED_PARAMETERS)


def release() -> None:
    """Return freed memory after the caller dropped its references (`del`)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def vae_scale_factor(model_dir: Path) -> int:
    """From vae/config.json, because a pipeline loaded without its VAE assumes 8."""
    config = json.loads((model_dir / "vae" / "config.json").read_text())
    return int(2 ** (len(config["block_out_channels"]) - 1))


def encode(model_dir: Path, source: ModelSource, waves: list[list[Item]], params: list[dict[str, Any]],
           device: str, placement: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stage 1: prompt embeddings for every batch, with only the text encoders loaded (call in inference_mode)."""
    pipe = load_pipeline(model_dir, source, transformer=None, vae=None, **placement)
    if not placement:
        pipe.to(device)
    out = []
    for batch, p in zip(waves, params, strict=True):
        embeds, pooled, _ids = pipe.encode_prompt(prompt=[i.prompt for i in batch], prompt_2=None, device=device,
                                                  max_sequence_length=p.get("max_sequence_length", 512))
        out.append((embeds, pooled))
    del pipe
    release()
    return out


def denoise(model_dir: Path, source: ModelSource, waves: list[list[Item]], params: list[dict[str, Any]],
            embeds: list[tuple[torch.Tensor, torch.Tensor]], transformer_kwargs: dict[str, Any],
            device: str, runtime: RuntimeOptions | None = None) -> list[torch.Tensor]:
    """Stage 2: packed latents, with only the transformer loaded (spread by `device_map`)."""
    from diffusers import AutoModel

    transformer = AutoModel.from_pretrained(str(model_dir), subfolder="transformer", dtype=torch_dtype(source.dtype),
                                            **transformer_kwargs)
    if "device_map" not in transformer_kwargs:
        transformer.to(device)
    pipe = load_pipeline(model_dir, source, transformer=transformer, vae=None,
                         **dict.fromkeys(TEXT_COMPONENTS))
    pipe.set_progress_bar_config(disable=True)
    pipe.vae_scale_factor = vae_scale_factor(model_dir)
    if runtime is not None:
        apply_runtime(pipe, runtime.model_copy(update={"compile": _without_decoder(runtime)}))
    out = []
    for batch, p, (prompt_embeds, pooled) in zip(waves, params, embeds, strict=True):
        call = {k: v for k, v in p.items() if k != "max_sequence_length"}
        out.append(pipe(prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled, generator=generators(batch),
                        output_type="latent", **call).images)
    del pipe, transformer
    release()
    return out


def _without_decoder(runtime: RuntimeOptions) -> Any:
    """spec.runtime.compile for the denoise stage (it has no VAE); None when it compiles only the decoder."""
    if runtime.compile is None or "denoiser" not in runtime.compile.modules:
        return None
    return runtime.compile.model_copy(update={"modules": ["denoiser"]})


def decode(model_dir: Path, source: ModelSource, latents: list[torch.Tensor], params: list[dict[str, Any]],
           device: str, output_type: str, runtime: RuntimeOptions | None = None) -> list[list[Any]]:
    """Stage 3: images, with only the VAE loaded."""
    from diffusers import AutoencoderKL, FluxPipeline
    from diffusers.image_processor import VaeImageProcessor

    vae = AutoencoderKL.from_pretrained(str(model_dir), subfolder="vae", dtype=torch_dtype(source.dtype)).to(device)
    if runtime is not None and runtime.compile is not None and "decoder" in runtime.compile.modules:
        vae.decoder.compile(mode=runtime.compile.mode, fullgraph=runtime.compile.fullgraph)
    factor = vae_scale_factor(model_dir)
    processor = VaeImageProcessor(vae_scale_factor=factor * 2)
    out = []
    for packed, p in zip(latents, params, strict=True):
        height, width = p.get("height", 128 * factor), p.get("width", 128 * factor)
        unpacked = FluxPipeline._unpack_latents(packed, height, width, factor)
        unpacked = (unpacked / vae.config.scaling_factor) + vae.config.shift_factor
        image = vae.decode(unpacked.to(device), return_dict=False)[0]
        out.append(list(processor.postprocess(image, output_type=output_type)))
    del vae
    release()
    return out
