"""Tiny random models built offline, saved with `save_pretrained` (tests, demo, benchmarks).

Nothing is downloaded: configs are written here and weights come from a seeded RNG, so the same
version string always yields the same weights. Usage:
`python -m kubeinfer_runtime.tinymodels flux|sd|gpt2|llama OUT_DIR`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Bump when a builder changes, so caches keyed by it are rebuilt.
VERSION = "1"
VOCAB_SIZE = 514  # 256 byte symbols + the same with </w> + BOS/EOS


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (bytes_to_unicode)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def clip_tokenizer() -> Any:
    """Byte-level CLIP BPE without merges: vocab and merges passed as objects (transformers 5 gotcha)."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def lm_tokenizer() -> Any:
    """Byte-level GPT-2 BPE without merges: every UTF-8 byte is one token, EOS = 256."""
    from transformers import GPT2Tokenizer

    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    vocab["<|endoftext|>"] = 256
    return GPT2Tokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>", model_max_length=128)


def build_flux(out: Path, seed: int = 0) -> Path:
    """A FluxPipeline small enough for 32x32 images in a second on CPU (sizes from the field notes)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D"], block_out_channels=[8], layers_per_block=1,
                        latent_channels=1, norm_num_groups=4, sample_size=32,
                        scaling_factor=0.5, shift_factor=0.1)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        projection_dim=32, max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513))
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=VOCAB_SIZE, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2, pad_token_id=513,
        eos_token_id=513, decoder_start_token_id=513))
    tokenizer = clip_tokenizer()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer,
                        transformer=transformer)
    pipe.save_pretrained(out)
    return out


def build_sd(out: Path, seed: int = 0) -> Path:
    """A StableDiffusionPipeline (UNet + one-block VAE + tiny CLIP): the non-Flux path, 32x32 in a blink."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D"], block_out_channels=[8], layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out)
    return out


def _save_lm(model: Any, out: Path) -> Path:
    model.eval()
    model.save_pretrained(out)
    lm_tokenizer().save_pretrained(out)
    return out


def build_gpt2(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_positions=128, n_embd=64, n_layer=4, n_head=4,
                        bos_token_id=256, eos_token_id=256, pad_token_id=256)
    return _save_lm(GPT2LMHeadModel(config), out)


def build_llama(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=256, eos_token_id=256, pad_token_id=256)
    return _save_lm(LlamaForCausalLM(config), out)


BUILDERS: dict[str, Callable[[Path, int], Path]] = {
    "flux": build_flux, "sd": build_sd, "gpt2": build_gpt2, "llama": build_llama}


def build(kind: str, out: str | Path, seed: int = 0) -> Path:
    """Build tiny model `kind` into `out` (created); raise a clear error for an unknown kind."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown tiny model {kind!r}; choose one of {sorted(BUILDERS)}")
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    _quiet_libraries()
    return BUILDERS[kind](path, seed)


def _quiet_libraries() -> None:
    """Import hints and save bars of transformers/diffusers say nothing to someone building a test model."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (transformers_logging, diffusers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()


def cache_dir() -> Path:
    """Where heavy, rebuildable things live: $KUBEINFER_CACHE or ~/.cache/kubeinfer."""
    return Path(os.environ.get("KUBEINFER_CACHE") or Path.home() / ".cache" / "kubeinfer")


def cached(kind: str) -> Path:
    """Tiny model `kind`, built once per VERSION; an atomic rename keeps concurrent builders safe."""
    target = cache_dir() / "tiny-models" / f"v{VERSION}" / kind
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
        build(kind, tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a tiny random model offline (save_pretrained).")
    parser.add_argument("kind", choices=sorted(BUILDERS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build(args.kind, args.out, args.seed))


if __name__ == "__main__":
    main()
