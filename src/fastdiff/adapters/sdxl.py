"""SDXL (two CLIP text encoders, pooled embedding and size conditioning)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image

from .base import Embeddings, guided_embeddings, image_latents

__all__ = ["StableDiffusionXLAdapter"]


@contextmanager
def _fp32_if_fp16(vae: Any) -> Iterator[None]:
    """Run an fp16 VAE whose config says `force_upcast` in float32 (it overflows in fp16: diffusers #4325), as
    the SDXL pipelines do; a bf16 or fp32 VAE is left as it is."""
    upcast = vae.dtype == torch.float16 and bool(vae.config.force_upcast)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(dtype=torch.float16)


def _latent_stats(vae: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    mean = getattr(vae.config, "latents_mean", None)
    std = getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    as_tensor = [torch.tensor(v).view(1, 4, 1, 1).to(like.device, like.dtype) for v in (mean, std)]
    return as_tensor[0], as_tensor[1]


class StableDiffusionXLAdapter:
    """Adapter for `StableDiffusionXLPipeline` / `StableDiffusionXLImg2ImgPipeline` (Turbo, Lightning, …)."""

    def encode(
        self, pipe: Any, prompt: str, negative_prompt: str | None, *, guidance: bool, device: torch.device
    ) -> Embeddings:
        """Same call as the pipeline makes, for one image (zeros for an empty negative, as the repo config says)."""
        encoded = pipe.encode_prompt(
            prompt,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guidance,
            negative_prompt=negative_prompt,
        )
        return guided_embeddings(*encoded, guidance=guidance)

    @torch.no_grad()
    def encode_image(
        self, pipe: Any, images: Sequence[Image.Image], generators: Sequence[torch.Generator], dtype: torch.dtype
    ) -> torch.Tensor:
        """As `StableDiffusionXLImg2ImgPipeline.prepare_latents` (fp32 for an fp16 VAE), then normalized."""
        with _fp32_if_fp16(pipe.vae):
            latents = image_latents(pipe, images, generators, dtype).to(dtype)
        stats = _latent_stats(pipe.vae, latents)
        scale: float = pipe.vae.config.scaling_factor
        if stats is not None:
            return (latents - stats[0]) * scale / stats[1]
        return scale * latents  # (B, 4, H/8, W/8)

    @torch.no_grad()
    def decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """VAE decode as the SDXL pipeline does it: fp32 upcast when the fp16 VAE would overflow."""
        vae = pipe.vae
        with _fp32_if_fp16(vae):
            latents = latents.to(vae.dtype)  # a bf16 VAE (optimize="default" on CUDA) decodes fp16 latents
            stats = _latent_stats(vae, latents)
            if stats is not None:
                latents = latents * stats[1] / vae.config.scaling_factor + stats[0]
            else:
                latents = latents / vae.config.scaling_factor
            image = vae.decode(latents, return_dict=False)[0]  # (B, 3, H, W)
        if getattr(pipe, "watermark", None) is not None:
            image = pipe.watermark.apply_watermark(image)
        images: list[Image.Image] = pipe.image_processor.postprocess(image, output_type="pil")
        return images
