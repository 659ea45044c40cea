"""A tiny random-weight Stable Diffusion 3.5 pipeline built in code: the real wiring (CLIP-L and CLIP-G with
projections, their hidden states side by side and padded to T5's width, then joined with T5's sequence; the pooled
vectors concatenated; a 16-channel VAE with scale and shift; an MMDiT with RMS QK-norm over 2×2 patches) with a
few dozen channels, so a 256² image takes well under a second on a CPU.

The tokenizers are built in code (the hub is never asked): CLIP's byte-level one (OpenCLIP-G's pads with "!", as
in SDXL) and the T5 tokenizer of `tiny_flux`.
"""

from __future__ import annotations

from typing import Any

import diffusers
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from transformers import CLIPTextModelWithProjection

from ..configs import repo_config
from ..configs.tokenizer import EOS
from ..presets import SD35_LARGE_TURBO_REPO
from .repo_configs import SCHEDULER_CONFIGS
from .tiny import _CLIP_L, _OPEN_CLIP_BIGG, _VAE_COMMON, _text_config, tiny_tokenizer
from .tiny_flux import tiny_t5_encoder, tiny_t5_tokenizer

__all__ = ["MODEL_INDEX", "SD3_VAE", "tiny_pipeline"]

# SD 3.5's VAE (configs/stabilityai/stable-diffusion-3.5-large-turbo/vae): 16 latent channels, scale and shift, no
# quant convs; four levels so that the VAE factor is 8.
SD3_VAE: dict[str, Any] = {
    **_VAE_COMMON,
    **{k: v for k, v in repo_config(SD35_LARGE_TURBO_REPO, "vae/config.json").items() if k.endswith("_factor")},
    "latent_channels": 16,
    "sample_size": 1024,
    "force_upcast": True,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
# the repo's model_index.json: no image_encoder/feature_extractor entries, T5TokenizerFast for tokenizer_3
MODEL_INDEX: dict[str, Any] = repo_config(SD35_LARGE_TURBO_REPO, "model_index.json")
# T5's width (joint_attention_dim) is wider than the two CLIPs' hidden states side by side (32 + 64), so that the
# pipeline pads them as it pads SD 3.5's 768 + 1280 to 4096.
_T5_WIDTH = 128
# SD 3.5 Large's transformer (patch 2 over 16 channels, RMS QK-norm, no dual-attention layers) with 2 heads of 16 and
# 2 joint blocks (the last one context-pre-only, as in the real one); the pooled projection is the two CLIPs'
# projections (32 each) concatenated; the real 192 position embeddings a side (sides up to 3072).
_TRANSFORMER: dict[str, Any] = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "caption_projection_dim": 32,
    "joint_attention_dim": _T5_WIDTH,
    "pooled_projection_dim": 64,
    "pos_embed_max_size": 192,
    "qk_norm": "rms_norm",
}


def tiny_pipeline(*, seed: int = 0, scheduler_config: dict[str, Any] | None = None) -> Any:
    """A tiny random-weight `StableDiffusion3Pipeline` on the CPU in float32, deterministic in `seed` (the turbo
    repo's scheduler config unless one is given)."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        transformer_class: Any = diffusers.SD3Transformer2DModel
        transformer = transformer_class(**_TRANSFORMER)
        vae = AutoencoderKL(**SD3_VAE)
        text_encoder = CLIPTextModelWithProjection(_text_config(_CLIP_L, EOS))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(_OPEN_CLIP_BIGG, "!"))
        text_encoder_3 = tiny_t5_encoder(width=_T5_WIDTH)
    for module in (transformer, vae, text_encoder, text_encoder_2, text_encoder_3):
        module.eval()  # as from_pretrained leaves them
    if scheduler_config is None:
        scheduler_config = SCHEDULER_CONFIGS[SD35_LARGE_TURBO_REPO]
    pipeline: Any = diffusers.StableDiffusion3Pipeline
    scheduler: Any = diffusers.FlowMatchEulerDiscreteScheduler
    return pipeline(
        transformer=transformer,
        scheduler=scheduler.from_config(scheduler_config),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tiny_tokenizer(pad_token="!"),
        text_encoder_3=text_encoder_3,
        tokenizer_3=tiny_t5_tokenizer(),
    )
