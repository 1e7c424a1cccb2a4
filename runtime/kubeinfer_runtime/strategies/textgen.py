"""Loading a transformers causal LM and generating text for one item (data, deviceMap).

Items are generated one at a time: sampling then uses a generator seeded with the item's seed, and
no padding enters the computation, so a text equals a direct `model.generate` on that prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kubeinfer_api.spec import ModelSource
from kubeinfer_runtime.strategies.base import Item
from kubeinfer_runtime.strategies.common import torch_dtype

DEFAULT_MAX_NEW_TOKENS = 32
RESERVED = ("input_ids", "attention_mask", "generation_config", "num_return_sequences", "return_dict_in_generate")


def lm_class(model_dir: Path, source: ModelSource) -> Any:
    """spec.model.pipeline (a transformers class) or AutoModelForCausalLM."""
    import transformers

    if not (model_dir / "config.json").is_file():
        raise ValueError(f"spec.model.uri: {model_dir} has no config.json, so it is not a transformers model "
                         "(task.type text-generation needs one)")
    if not source.pipeline:
        return transformers.AutoModelForCausalLM
    cls: Any = getattr(transformers, source.pipeline, None)
    loadable = isinstance(cls, type) and (issubclass(cls, transformers.PreTrainedModel)
                                          or cls.__name__.startswith("AutoModel"))
    if not loadable:
        raise ValueError(f"spec.model.pipeline: {source.pipeline!r} is not a transformers model class "
                         "(e.g. AutoModelForCausalLM, GPT2LMHeadModel); leave it unset for AutoModelForCausalLM")
    return cls


def model_class_name(model_dir: Path) -> str:
    """The architecture in config.json (without loading)."""
    archs = json.loads((model_dir / "config.json").read_text()).get("architectures") or ["?"]
    return str(archs[0])


def load_lm(model_dir: Path, source: ModelSource, **kwargs: Any) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode; kwargs go to from_pretrained (device_map, max_memory...)."""
    from transformers import AutoTokenizer

    model = lm_class(model_dir, source).from_pretrained(model_dir, dtype=torch_dtype(source.dtype), **kwargs)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer


def generation_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    reserved = sorted(set(params) & set(RESERVED))
    if reserved:
        raise ValueError(f"task.parameters: {reserved} are set by kubeinfer; remove them")
    return {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "do_sample": False, **params}


def generate_text(model: Any, tokenizer: Any, item: Item, params: dict[str, Any], device: str) -> str:
    """The continuation of `item.prompt` (new tokens only, special tokens removed)."""
    kwargs = generation_kwargs(params)
    encoded = tokenizer(item.prompt, return_tensors="pt").to(device)
    if kwargs.get("do_sample"):
        torch.manual_seed(item.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(**encoded, pad_token_id=pad, **kwargs)
    return str(tokenizer.decode(out[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True))
