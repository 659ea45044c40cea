"""A tiny random-weight FLUX.1 pipeline built in code: the real wiring (CLIP-L's pooled vector, a T5 encoder, a
16-channel VAE with scale and shift, a transformer over packed 2×2 patches, RoPE on three axes) with a few dozen
channels, so a 256² image takes well under a second on a CPU.

Both tokenizers are built here (the hub is never asked): CLIP's byte-level one from `tiny`, and a T5 Unigram
tokenizer over printable ASCII (a character, or a word-initial character with SentencePiece's "▁").
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Any

import diffusers
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from transformers import CLIPTextModel, T5Config, T5EncoderModel, T5Tokenizer

from ..configs import repo_config
from ..configs.tokenizer import EOS
from ..presets import FLUX_SCHNELL_REPO
from .repo_configs import SCHEDULER_CONFIGS
from .tiny import _CLIP_L, _VAE_COMMON, _text_config, tiny_tokenizer

__all__ = ["FLUX_VAE", "MODEL_INDEX", "tiny_pipeline", "tiny_t5_encoder", "tiny_t5_tokenizer"]

# FLUX.1's VAE (shared/reference/model-configs/flux1-schnell/vae): 16 latent channels, scale and shift, no
# quant convs; four levels so that the VAE factor is 8, and the image side a multiple of 16 with the 2×2 patches.
FLUX_VAE: dict[str, Any] = {
    **_VAE_COMMON,
    "latent_channels": 16,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "force_upcast": True,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
# the repo's model_index.json, which names the T5 tokenizer T5TokenizerFast (transformers 5 saves it as T5Tokenizer,
# the same class)
MODEL_INDEX: dict[str, Any] = repo_config(FLUX_SCHNELL_REPO, "model_index.json")
_TEXT_WIDTH = 32  # T5's d_model (joint_attention_dim) and CLIP's hidden size (pooled_projection_dim)
# schnell's transformer (no guidance embedder, patch 1 over 16 × 4 packed channels) with 2 heads of 16 and one
# block of each kind; RoPE's axes add up to the head width, as 16 + 56 + 56 = 128 do in the real one.
_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": _TEXT_WIDTH,
    "pooled_projection_dim": _TEXT_WIDTH,
    "guidance_embeds": False,
    "axes_dims_rope": (4, 4, 8),
}


@lru_cache(maxsize=1)
def _t5_vocab() -> tuple[tuple[str, float], ...]:
    chars = [c for c in string.printable if not c.isspace()]
    special = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]  # T5's ids: pad 0, eos 1, unk 2
    return (*special, *((c, -3.0) for c in chars), *(("▁" + c, -2.5) for c in chars))


def tiny_t5_tokenizer() -> T5Tokenizer:
    """A T5 tokenizer (Unigram, "</s>" appended) over printable ASCII: about one token per character."""
    return T5Tokenizer(vocab=list(_t5_vocab()), extra_ids=0, model_max_length=512)


def tiny_t5_encoder(*, width: int) -> T5EncoderModel:
    """A two-layer T5 v1.1 encoder (gated GELU, as google/t5-v1_1-xxl) of `width` over `tiny_t5_tokenizer`'s
    vocabulary, drawn from the current RNG."""
    config = T5Config(
        vocab_size=len(_t5_vocab()),
        d_model=width,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
    )
    return T5EncoderModel(config)


def tiny_pipeline(*, seed: int = 0, scheduler_config: dict[str, Any] | None = None) -> Any:
    """A tiny random-weight `FluxPipeline` on the CPU in float32, deterministic in `seed` (schnell's scheduler
    config unless one is given)."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        transformer_class: Any = diffusers.FluxTransformer2DModel
        transformer = transformer_class(**_TRANSFORMER)
        vae = AutoencoderKL(**FLUX_VAE)
        text_encoder = CLIPTextModel(_text_config(_CLIP_L, EOS))
        text_encoder_2 = tiny_t5_encoder(width=_TEXT_WIDTH)
    for module in (transformer, vae, text_encoder, text_encoder_2):
        module.eval()  # as from_pretrained leaves them
    if scheduler_config is None:
        scheduler_config = SCHEDULER_CONFIGS[FLUX_SCHNELL_REPO]
    pipeline: Any = diffusers.FluxPipeline
    scheduler: Any = diffusers.FlowMatchEulerDiscreteScheduler
    return pipeline(
        scheduler=scheduler.from_config(scheduler_config),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tiny_t5_tokenizer(),
        transformer=transformer,
    )
