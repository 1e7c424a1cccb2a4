"""Loading a transformers causal LM and generating text for a batch of items (data, deviceMap).

A batch is one `model.generate` call on its prompts, left-padded with an attention mask (a decoder
generates after its last token, so padding goes on the left). Batches are cut by global index
([k*b, (k+1)*b)), so a text depends on its batch-mates, never on who computed it or when: it equals a
direct `model.generate` on the same batch. With batchSize 1 no padding enters and a text equals
`generate` on that prompt alone; larger batches can change the last bits of the logits (padding,
another matmul shape) and so, rarely, a greedy token. Sampling seeds the global generator once per
batch with its first item's seed (transformers samples a batch from one generator).
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


def generate_texts(model: Any, tokenizer: Any, items: list[Item], params: dict[str, Any], device: str) -> list[str]:
    """The continuations of the items' prompts (new tokens only, special tokens removed), one `generate` call."""
    kwargs = generation_kwargs(params)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = pad
    encoded = tokenizer([item.prompt for item in items], return_tensors="pt", padding=True).to(device)
    if kwargs.get("do_sample"):
        torch.manual_seed(items[0].seed)
    with torch.inference_mode():
        out = model.generate(**encoded, pad_token_id=pad, **kwargs)
    new_tokens = out[:, encoded["input_ids"].shape[1]:]
    return [str(text) for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
