"""A tiny random-weight Z-Image pipeline built in code: the real wiring (a Qwen3 text encoder read at its
second-to-last layer through a chat template, FLUX.1's 16-channel VAE with scale and shift, a single-stream
transformer over 2×2 patches with refiner blocks and RoPE on three axes) with a few dozen channels.

The tokenizer is the tiny FLUX.2 [klein]'s, built in code: a byte-level `Qwen2Tokenizer` with Qwen3's special
tokens and chat template.
"""

from __future__ import annotations

from typing import Any

import diffusers
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from transformers import Qwen3Config, Qwen3Model

from ..configs import repo_config
from ..presets import Z_IMAGE_TURBO_REPO
from .repo_configs import SCHEDULER_CONFIGS
from .tiny_flux import FLUX_VAE
from .tiny_flux2 import tiny_qwen_tokenizer

__all__ = ["MODEL_INDEX", "tiny_pipeline"]

MODEL_INDEX: dict[str, Any] = repo_config(Z_IMAGE_TURBO_REPO, "model_index.json")
_TEXT_WIDTH = 32  # Qwen3's hidden size, the transformer's cap_feat_dim (2560 in the real model)
# Z-Image-Turbo's transformer config (16 latent channels, 2×2 patches, RoPE's axis lengths and theta, QK norm) at
# width 32 with 2 heads of 16 and one main and one refiner block of each kind; RoPE's axes add up to the head
# width, as 32 + 48 + 48 = 128 do in the real one.
_TRANSFORMER: dict[str, Any] = {
    key: value
    for key, value in repo_config(Z_IMAGE_TURBO_REPO, "transformer/config.json").items()
    if not key.startswith("_")
} | {
    "dim": 32,
    "n_layers": 1,
    "n_refiner_layers": 1,
    "n_heads": 2,
    "n_kv_heads": 2,
    "cap_feat_dim": _TEXT_WIDTH,
    "axes_dims": [4, 6, 6],
}


def tiny_pipeline(*, seed: int = 0, scheduler_config: dict[str, Any] | None = None) -> Any:
    """A tiny random-weight `ZImagePipeline` on the CPU in float32, deterministic in `seed` (Z-Image-Turbo's
    scheduler config unless one is given)."""
    tokenizer = tiny_qwen_tokenizer()
    text_config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_WIDTH,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=1024,
        tie_word_embeddings=True,  # as the repo's config
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        transformer_class: Any = diffusers.ZImageTransformer2DModel
        transformer = transformer_class(**_TRANSFORMER)
        vae = AutoencoderKL(**FLUX_VAE)
        text_encoder = Qwen3Model(text_config)
    for module in (transformer, vae, text_encoder):
        module.eval()  # as from_pretrained leaves them
    scheduler: Any = diffusers.FlowMatchEulerDiscreteScheduler
    pipeline: Any = diffusers.ZImagePipeline
    return pipeline(
        scheduler=scheduler.from_config(scheduler_config or SCHEDULER_CONFIGS[Z_IMAGE_TURBO_REPO]),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
