"""A tiny random-weight FLUX.2 [klein] pipeline built in code: the real wiring (a Qwen3 causal LM whose hidden
states after layers 9, 18 and 27 are stacked, a 32-channel VAE with batch-norm latent statistics and 2×2 patches,
a transformer over 128 packed channels with RoPE on four axes, the repo's `is_distilled`) with a few dozen channels.

The Qwen2 tokenizer is built here (the hub is never asked): byte-level, one token per byte, with Qwen3's chat
template for one user message and its special tokens.
"""

from __future__ import annotations

from typing import Any

import diffusers
import torch
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3ForCausalLM

from ..configs import repo_config
from ..configs.tokenizer import QWEN3_CHAT_TEMPLATE, _bytes_to_unicode
from ..presets import FLUX2_KLEIN_4B_REPO

__all__ = ["MODEL_INDEX", "SCHEDULER_CONFIG", "tiny_pipeline", "tiny_qwen_tokenizer"]

# The repo's model_index.json and (inferred) scheduler config, as shipped in fastdiff.configs (README.md there says
# what was read and what is inferred).
MODEL_INDEX: dict[str, Any] = repo_config(FLUX2_KLEIN_4B_REPO, "model_index.json")
SCHEDULER_CONFIG: dict[str, Any] = repo_config(FLUX2_KLEIN_4B_REPO, "scheduler/scheduler_config.json")

_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")  # Qwen3's, in its id order
_TEXT_WIDTH = 16  # Qwen3's hidden size; the transformer reads 3 layers' states side by side (joint_attention_dim)
# The real VAE and transformer configs, narrowed (the repo's latent channels, patch, batch-norm eps, quant convs,
# RoPE theta and MLP ratio kept); four VAE levels keep its factor 8.
_VAE: dict[str, Any] = {
    # the file's force_upcast is no argument of AutoencoderKLFlux2 (loading the repo logs that it is ignored)
    **{k: v for k, v in repo_config(FLUX2_KLEIN_4B_REPO, "vae/config.json").items() if k != "force_upcast"},
    "block_out_channels": (4, 8, 16, 16),
    "layers_per_block": 1,
    "norm_num_groups": 4,
}
_TRANSFORMER: dict[str, Any] = {
    **repo_config(FLUX2_KLEIN_4B_REPO, "transformer/config.json"),
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 3 * _TEXT_WIDTH,
    "axes_dims_rope": (4, 4, 4, 4),  # adding up to the head width, as 4 × 32 = 128 do in the real one
}
# Qwen3-4B's activation, norm eps and RoPE theta; 28 layers so that layer 27, the last the pipeline reads, is an
# intermediate state as in the real 36 (the final one comes out normalized); grouped-query attention as 32/8 heads.
_QWEN3: dict[str, Any] = {
    "hidden_size": _TEXT_WIDTH,
    "intermediate_size": 24,
    "num_hidden_layers": 28,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 8,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
}


def tiny_qwen_tokenizer() -> Qwen2Tokenizer:
    """A Qwen2 tokenizer with one token per byte (no merges), Qwen3's special tokens and chat template, padding
    with "<|endoftext|>" as Qwen3's does."""
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)} | {t: len(chars) + i for i, t in enumerate(_SPECIAL)}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=131072)
    tokenizer.add_special_tokens({"additional_special_tokens": list(_SPECIAL[1:])})
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def tiny_pipeline(*, seed: int = 0, scheduler_config: dict[str, Any] | None = None) -> Any:
    """A tiny random-weight `Flux2KleinPipeline` (`is_distilled`, as the repo) on the CPU in float32, deterministic
    in `seed` (the inferred scheduler config above unless one is given)."""
    tokenizer = tiny_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        transformer_class: Any = diffusers.Flux2Transformer2DModel
        transformer = transformer_class.from_config(_TRANSFORMER)
        vae_class: Any = diffusers.AutoencoderKLFlux2
        vae = vae_class.from_config(_VAE)
        # Statistics of trained latents (a fresh BatchNorm's are 0 and 1, which would hide a missing de-normalization)
        channels = vae.bn.num_features
        vae.bn.running_mean.copy_(torch.randn(channels) * 0.5)
        vae.bn.running_var.copy_(torch.rand(channels) + 0.5)
        config = Qwen3Config(**_QWEN3, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
        text_encoder = Qwen3ForCausalLM(config)
    for module in (transformer, vae, text_encoder):
        module.eval()  # as from_pretrained leaves them
    scheduler: Any = diffusers.FlowMatchEulerDiscreteScheduler
    pipeline: Any = diffusers.Flux2KleinPipeline
    return pipeline(
        scheduler=scheduler.from_config(scheduler_config or SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )
