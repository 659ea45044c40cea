"""A tiny random-weight SANA-Sprint pipeline built in code: the real wiring (a Gemma-2 text encoder, a 32-channel
DC-AE with 32× downsampling over six levels, a linear-attention transformer over 1×1 patches with a guidance
embedder, the SCM scheduler of the repo) with a few dozen channels.

The pipeline bins every size to about 1024² before it denoises (and resizes the image back), so the tiny DC-AE
keeps its full-resolution levels narrowest. The Gemma tokenizer is built here (the hub is never asked): byte-level
BPE with Gemma's special tokens and ids, one token per printable character.
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Any

import diffusers
import torch
from transformers import Gemma2Config, Gemma2Model, GemmaTokenizer

from ..configs import repo_config
from ..presets import SANA_SPRINT_06B_REPO
from .repo_configs import SCHEDULER_CONFIGS

__all__ = ["MODEL_INDEX", "tiny_gemma_tokenizer", "tiny_pipeline"]

MODEL_INDEX: dict[str, Any] = repo_config(SANA_SPRINT_06B_REPO, "model_index.json")
_CAPTION_WIDTH = 32  # Gemma's hidden size, the transformer's caption_channels (2304 in the real one)
# The real transformer's layout (shared/reference/model-configs/sana-sprint-0.6b/transformer): patch 1 over 32
# latent channels, RMS QK-norm across heads, a guidance embedder scaled by 0.1, sample_size 32 (the pipeline's
# resolution binning requires it); 2 heads of 8 and one block.
_TRANSFORMER: dict[str, Any] = {
    **{k: v for k, v in repo_config(SANA_SPRINT_06B_REPO, "transformer/config.json").items() if k[0] != "_"},
    "num_layers": 1,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "num_cross_attention_heads": 2,
    "cross_attention_head_dim": 8,
    "cross_attention_dim": 16,
    "caption_channels": _CAPTION_WIDTH,
}
# DC-AE f32c32: six levels (three ResBlock, three EfficientViT), 32 latent channels, the real scaling factor.
_VAE: dict[str, Any] = {
    "in_channels": 3,
    "latent_channels": 32,
    "attention_head_dim": 4,
    "encoder_block_types": ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    "decoder_block_types": ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    "encoder_block_out_channels": (2, 2, 4, 8, 16, 32),
    "decoder_block_out_channels": (2, 2, 4, 8, 16, 32),
    "encoder_layers_per_block": (1,) * 6,
    "decoder_layers_per_block": (1,) * 6,
    "encoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
    "decoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
    "downsample_block_type": "Conv",
    "upsample_block_type": "interpolate",
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
    "scaling_factor": 0.41407,
}
_SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # Gemma's ids 0-4


@lru_cache(maxsize=1)
def _gemma_vocab() -> dict[str, int]:
    chars = [c for c in string.printable if not c.isspace()] + ["▁"]
    return {token: i for i, token in enumerate((*_SPECIAL, *chars))}


def tiny_gemma_tokenizer() -> GemmaTokenizer:
    """A Gemma tokenizer (BPE, "<bos>" first, right padding with "<pad>") over printable ASCII, one token per
    character and space."""
    return GemmaTokenizer(vocab=dict(_gemma_vocab()), merges=[], add_bos_token=True, model_max_length=8192)


def tiny_pipeline(*, seed: int = 0, scheduler_config: dict[str, Any] | None = None) -> Any:
    """A tiny random-weight `SanaSprintPipeline` on the CPU in float32, deterministic in `seed` (the 0.6B repo's
    scheduler config unless one is given)."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        transformer_class: Any = diffusers.SanaTransformer2DModel
        vae_class: Any = diffusers.AutoencoderDC
        transformer, vae = transformer_class(**_TRANSFORMER), vae_class(**_VAE)
        gemma = Gemma2Config(
            vocab_size=len(_gemma_vocab()),
            hidden_size=_CAPTION_WIDTH,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=2048,  # the complex human instruction is ~1,000 characters, one token each
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        )
        text_encoder = Gemma2Model(gemma)
    for module in (transformer, vae, text_encoder):
        module.eval()  # as from_pretrained leaves them
    scheduler: Any = diffusers.SCMScheduler
    pipeline: Any = diffusers.SanaSprintPipeline
    config = scheduler_config if scheduler_config is not None else SCHEDULER_CONFIGS[SANA_SPRINT_06B_REPO]
    return pipeline(
        tokenizer=tiny_gemma_tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler.from_config(config),
    )
