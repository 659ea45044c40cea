"""SDXL (two CLIP text encoders, pooled embedding and size conditioning)."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from .base import Embeddings

__all__ = ["StableDiffusionXLAdapter"]


class StableDiffusionXLAdapter:
    """Adapter for `StableDiffusionXLPipeline` / `StableDiffusionXLImg2ImgPipeline` (Turbo, Lightning, …)."""

    def encode(self, pipe: Any, prompt: str, negative_prompt: str | None, *, guidance: bool) -> Embeddings:
        """Same call as the pipeline makes, for one image (zeros for an empty negative, as the repo config says)."""
        positive, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guidance,
            negative_prompt=negative_prompt,
        )
        embeds = {"prompt_embeds": positive, "pooled_prompt_embeds": pooled}
        if guidance:
            embeds["negative_prompt_embeds"] = negative
            embeds["negative_pooled_prompt_embeds"] = negative_pooled
        return embeds

    @torch.no_grad()
    def decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """VAE decode as the SDXL pipeline does it: fp32 upcast when the fp16 VAE would overflow."""
        vae = pipe.vae
        needs_upcasting = vae.dtype == torch.float16 and vae.config.force_upcast
        if needs_upcasting:
            pipe.upcast_vae()
            latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
        else:
            latents = latents.to(vae.dtype)  # a bf16 VAE (optimize="default" on CUDA) decodes fp16 latents
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean_t = torch.tensor(mean).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            std_t = torch.tensor(std).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std_t / vae.config.scaling_factor + mean_t
        else:
            latents = latents / vae.config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]  # (B, 3, H, W)
        if needs_upcasting:
            vae.to(dtype=torch.float16)
        if getattr(pipe, "watermark", None) is not None:
            image = pipe.watermark.apply_watermark(image)
        images: list[Image.Image] = pipe.image_processor.postprocess(image, output_type="pil")
        return images
