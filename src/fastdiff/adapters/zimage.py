"""Z-Image (a Qwen3 text encoder's second-to-last hidden states, one variable-length tensor per prompt, and a
single-stream transformer over FLUX's 16-channel latent space)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from .base import Embeddings, shifted_image_latents

__all__ = ["ZImageAdapter"]


class ZImageAdapter:
    """Adapter for `ZImagePipeline` / `ZImageImg2ImgPipeline`. Its embeddings are lists of (L, 2560) tensors, the
    prompt's tokens without padding, as the pipeline passes them; negatives only when the call runs CFG."""

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
        """`encode_prompt` for one image, as the pipeline calls it (the chat template is applied there)."""
        embeds, negative = pipe.encode_prompt(
            prompt,
            device=device,
            do_classifier_free_guidance=guidance,
            negative_prompt=negative_prompt,
            max_sequence_length=max_sequence_length or 512,  # ZImagePipeline's own default
        )
        return {"prompt_embeds": embeds, **({"negative_prompt_embeds": negative} if guidance else {})}

    @torch.no_grad()
    def encode_image(
        self, pipe: Any, images: Sequence[Image.Image], generators: Sequence[torch.Generator], dtype: torch.dtype
    ) -> torch.Tensor:
        """As `ZImageImg2ImgPipeline.prepare_latents`: (VAE sample − shift) × scale, (B, 16, H/8, W/8), which the
        pipeline takes as `image=` and noises itself."""
        vae = pipe.vae
        # Its image processor is built without `vae_latent_channels` (FluxImg2ImgPipeline's has them), so it would
        # resize and renormalize latents given as `image=`; told the channel count, it passes them on as they are.
        pipe.image_processor.register_to_config(vae_latent_channels=vae.config.latent_channels)
        return shifted_image_latents(pipe, images, generators, dtype)

    @torch.no_grad()
    def decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """Undo scale and shift and decode: ZImagePipeline's `output_type="pil"` path."""
        vae = pipe.vae
        latents = (latents.to(vae.dtype) / vae.config.scaling_factor) + vae.config.shift_factor
        image = vae.decode(latents, return_dict=False)[0]  # (B, 3, H, W)
        images: list[Image.Image] = pipe.image_processor.postprocess(image, output_type="pil")
        return images
