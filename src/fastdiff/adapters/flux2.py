"""FLUX.2 [klein] (a Qwen3 text encoder's hidden states from three layers, a rectified-flow transformer over 2×2
latent patches, a VAE whose latents are normalized by batch-norm statistics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ..errors import FastDiffError, warn
from .base import Embeddings

__all__ = ["Flux2KleinAdapter", "qwen_truncation"]


def _length(max_sequence_length: int | None) -> int:
    return max_sequence_length or 512  # Flux2KleinPipeline's own default


class Flux2KleinAdapter:
    """Adapter for `Flux2KleinPipeline`. A step-distilled repo (`is_distilled`) never runs CFG, whatever the
    guidance; a base model does, against the empty prompt (or `negative_prompt`) as `negative_prompt_embeds`."""

    def encode(
        self,
        pipe: Any,
        prompt: str,
        negative_prompt: str | None,
        *,
        guidance: bool,
        device: torch.device,
        max_sequence_length: int | None = None,
    ) -> Embeddings:
        """`encode_prompt` for one image, as the pipeline calls it; its `text_ids` the pipeline rebuilds itself."""
        length = _length(max_sequence_length)
        embeds, _ = pipe.encode_prompt(prompt, device=device, num_images_per_prompt=1, max_sequence_length=length)
        if not guidance or pipe.config.is_distilled:
            return {"prompt_embeds": embeds}  # (1, L, 3 × 2560) for the real model
        negative, _ = pipe.encode_prompt(
            negative_prompt or "", device=device, num_images_per_prompt=1, max_sequence_length=length
        )
        return {"prompt_embeds": embeds, "negative_prompt_embeds": negative}

    def encode_image(
        self, pipe: Any, images: Sequence[Image.Image], generators: Sequence[torch.Generator], dtype: torch.dtype
    ) -> torch.Tensor:
        """Never called: diffusers has no image-to-image pipeline for FLUX.2 [klein] (its `image=` is reference
        editing), so the generator refuses `image=` first."""
        raise FastDiffError("FLUX.2 [klein] has no image-to-image pipeline in diffusers; drop image=")

    @torch.no_grad()
    def decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """The pipeline's `output_type="latent"` latents are already unpacked, de-normalized with the VAE's
        batch-norm statistics and unpatchified to (B, 32, H/8, W/8): decode them, as its `output_type="pil"` path."""
        vae = pipe.vae
        image = vae.decode(latents.to(vae.device, vae.dtype), return_dict=False)[0]  # (B, 3, H, W)
        images: list[Image.Image] = pipe.image_processor.postprocess(image, output_type="pil")
        return images


def qwen_truncation(pipe: Any, prompt: str, max_sequence_length: int | None, *, enable_thinking: bool = False) -> None:
    """Warn when the text encoder cuts the prompt: the pipeline wraps it in Qwen's chat template (thinking off for
    FLUX.2, on for Z-Image), then truncates the whole text to `max_sequence_length` tokens (512 by default, both)."""
    tokenizer, limit = pipe.tokenizer, _length(max_sequence_length)
    messages = [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    count = len(tokenizer(text, truncation=False).input_ids)
    if count > limit:
        warn(
            f"the prompt is {count} Qwen3 tokens with its chat template; this model reads only the first {limit} "
            "(max_sequence_length), the rest is cut. Shorten the prompt (put what matters first)."
        )
