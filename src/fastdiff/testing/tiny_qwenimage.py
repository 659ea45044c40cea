"""A tiny random-weight Qwen-Image pipeline built in code: the real wiring (a Qwen2.5-VL text encoder read at its last
hidden layer behind the pipeline's prompt template, a 16-channel causal 3-D VAE with per-channel latent mean and std,
an MMDiT over packed 2×2 patches with RoPE on three axes, no guidance embedder) with a few dozen channels.

The Qwen2 tokenizer is built here too (the hub is never asked): byte-level BPE whose merges make each word of the
pipeline's prompt template one token, so that the template takes the 34 tokens it takes with the real tokenizer and
the pipeline's `prompt_template_encode_start_idx` drops exactly the template.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import diffusers
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

from ..configs import repo_config
from ..configs.tokenizer import byte_vocab
from ..presets import QWEN_IMAGE_REPO
from .repo_configs import SCHEDULER_CONFIGS

__all__ = ["MODEL_INDEX", "tiny_pipeline", "tiny_qwen2_tokenizer"]

MODEL_INDEX: dict[str, Any] = repo_config(QWEN_IMAGE_REPO, "model_index.json")
# the chat template QwenImagePipeline wraps every prompt in (its `prompt_template_encode`), up to the prompt
_TEMPLATE_PREFIX = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n"
)
# Qwen2's special tokens: padding and the chat markers, then the vision markers Qwen2.5-VL's config names
_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_VISION = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
_TEXT_WIDTH = 32  # the text encoder's hidden size, which is the transformer's joint_attention_dim
# Qwen-Image's transformer (patch 2 over 16 × 4 packed channels, no guidance embedder) with 2 heads of 16 and one
# block; RoPE's axes add up to the head width, as 16 + 56 + 56 = 128 do in the real one.
_TRANSFORMER: dict[str, Any] = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": _TEXT_WIDTH,
    "guidance_embeds": False,
    "axes_dims_rope": (4, 6, 6),
}
# The repo's VAE (16 latent channels, its latents_mean/std, three downsamplings: the VAE factor 8) at base width 8.
_VAE: dict[str, Any] = {
    **{k: v for k, v in repo_config(QWEN_IMAGE_REPO, "vae/config.json").items() if not k.startswith("_")},
    "base_dim": 8,
    "num_res_blocks": 1,
}


@lru_cache(maxsize=1)
def _bpe() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Every byte (GPT-2's byte-level alphabet), each template word built up one byte at a time, then the
    special tokens."""
    alphabet = [token for token in byte_vocab() if len(token) == 1]
    merges: dict[tuple[str, str], None] = {}  # ordered and unique
    # the words of the template as Qwen2's pre-tokenizer splits them, a leading space as byte-level "Ġ"
    for word in re.findall(r" ?[A-Za-z]+", re.sub(r"<\|\w+\|>", "\n", _TEMPLATE_PREFIX)):
        word = word.replace(" ", "Ġ")
        merges |= {(word[:end], word[end]): None for end in range(1, len(word))}
    tokens = [*alphabet, *dict.fromkeys(a + b for a, b in merges), *_SPECIAL, *_VISION]
    return {token: i for i, token in enumerate(tokens)}, tuple(merges)


def tiny_qwen2_tokenizer() -> Qwen2Tokenizer:
    """A Qwen2 tokenizer (byte-level BPE, "<|endoftext|>" pads) that reads the template's words as whole tokens and
    anything else byte by byte."""
    vocab, merges = _bpe()
    pairs: Any = list(merges)  # the tokenizers library takes (a, b) pairs; the signature says "a b" strings
    return Qwen2Tokenizer(vocab=dict(vocab), merges=pairs, extra_special_tokens=list(_SPECIAL[1:] + _VISION))


def _text_encoder() -> Qwen2_5_VLForConditionalGeneration:
    """Qwen2.5-VL with a 2-layer text model (grouped-query attention and multimodal RoPE as in the 7B) and the
    smallest vision tower the class builds (text-to-image never runs it)."""
    vocab = _bpe()[0]
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": _TEXT_WIDTH,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "vocab_size": len(vocab),
            # RoPE's sections over time, height and width add up to half the head width (16 / 2), as in the 7B
            "rope_scaling": {"mrope_section": [2, 3, 3], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-06,
            "bos_token_id": vocab["<|endoftext|>"],
            "eos_token_id": vocab["<|im_end|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": _TEXT_WIDTH,
        },
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def tiny_pipeline(*, seed: int = 0, scheduler_config: dict[str, Any] | None = None) -> Any:
    """A tiny random-weight `QwenImagePipeline` on the CPU in float32, deterministic in `seed` (Qwen-Image's
    scheduler config unless one is given)."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        transformer_class: Any = diffusers.QwenImageTransformer2DModel
        transformer = transformer_class(**_TRANSFORMER)
        vae_class: Any = diffusers.AutoencoderKLQwenImage
        vae = vae_class(**_VAE)
        text_encoder = _text_encoder()
    for module in (transformer, vae, text_encoder):
        module.eval()  # as from_pretrained leaves them
    scheduler: Any = diffusers.FlowMatchEulerDiscreteScheduler
    pipeline: Any = diffusers.QwenImagePipeline
    return pipeline(
        scheduler=scheduler.from_config(scheduler_config or SCHEDULER_CONFIGS[QWEN_IMAGE_REPO]),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_qwen2_tokenizer(),
        transformer=transformer,
    )
