"""SD 1.x / 2.x (one CLIP text encoder, no size conditioning)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from .base import Embeddings, image_latents

__all__ = ["StableDiffusionAdapter"]


class StableDiffusionAdapter:
    """Adapter for `StableDiffusionPipeline` / `StableDiffusionImg2ImgPipeline` (SD 1.x, SD 2.x, SD-Turbo)."""

    def encode(
        self, pipe: Any, prompt: str, negative_prompt: str | None, *, guidance: bool, device: torch.device
    ) -> Embeddings:
        """Same call as the pipeline makes, for one image."""
        positive, negative = pipe.encode_prompt(prompt, device, 1, guidance, negative_prompt=negative_prompt)
        embeds = {"prompt_embeds": positive}
        if guidance:
            embeds["negative_prompt_embeds"] = negative
        return embeds

    @torch.no_grad()
    def encode_image(
        self, pipe: Any, images: Sequence[Image.Image], generators: Sequence[torch.Generator], dtype: torch.dtype
    ) -> torch.Tensor:
        """As `StableDiffusionImg2ImgPipeline.prepare_latents`: VAE sample × scaling factor."""
        scale: float = pipe.vae.config.scaling_factor
        return (scale * image_latents(pipe, images, generators, dtype)).to(dtype)  # (B, 4, H/8, W/8)

    @torch.no_grad()
    def decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """VAE decode, safety checker when the pipeline has one, then post-processing (as in diffusers)."""
        vae = pipe.vae
        # In the VAE's own dtype: a bf16 VAE (optimize="default" on CUDA) decodes the fp16 UNet's latents.
        image = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0]  # (B, 3, H, W)
        nsfw = None
        if getattr(pipe, "safety_checker", None) is not None:
            image, nsfw = pipe.run_safety_checker(image, latents.device, latents.dtype)
        denormalize = [True] * image.shape[0] if nsfw is None else [not flagged for flagged in nsfw]
        images: list[Image.Image] = pipe.image_processor.postprocess(
            image, output_type="pil", do_denormalize=denormalize
        )
        return images
