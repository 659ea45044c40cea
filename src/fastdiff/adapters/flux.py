"""FLUX.1 (CLIP's pooled embedding and T5's sequence, a rectified-flow transformer over packed 2×2 latent patches)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ..errors import warn
from .base import Embeddings, shifted_image_latents

__all__ = ["FluxAdapter", "flux_img2img_arguments", "t5_truncation"]


class FluxAdapter:
    """Adapter for `FluxPipeline` / `FluxImg2ImgPipeline` (FLUX.1 [schnell]). Guidance is never classifier-free
    here (schnell has no guidance embedder), so there are no negative embeddings."""

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
        length = max_sequence_length or 512  # FluxPipeline's own default
        embeds, pooled, _ = pipe.encode_prompt(
            prompt, device=device, num_images_per_prompt=1, max_sequence_length=length
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}  # (1, L, 4096), (1, 768) for the real model

    @torch.no_grad()
    def encode_image(
        self, pipe: Any, images: Sequence[Image.Image], generators: Sequence[torch.Generator], dtype: torch.dtype
    ) -> torch.Tensor:
        """As `FluxImg2ImgPipeline._encode_vae_image`: (VAE sample − shift) × scale, unpacked (B, 16, H/8, W/8);
        the img2img pipeline takes these latents as `image=` and packs them itself."""
        return shifted_image_latents(pipe, images, generators, dtype)

    @torch.no_grad()
    def decode(
        self, pipe: Any, latents: torch.Tensor, *, height: int | None = None, width: int | None = None
    ) -> list[Image.Image]:
        """Unpack (B, H/16 · W/16, 64) to (B, 16, H/8, W/8), undo scale and shift, decode: FluxPipeline's
        `output_type="pil"` path."""
        if height is None or width is None:
            raise TypeError("FluxAdapter.decode needs the image's height= and width= to unpack the latents")
        vae = pipe.vae
        latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        latents = (latents / vae.config.scaling_factor + vae.config.shift_factor).to(vae.dtype)
        image = vae.decode(latents, return_dict=False)[0]  # (B, 3, H, W)
        images: list[Image.Image] = pipe.image_processor.postprocess(image, output_type="pil")
        return images


def t5_truncation(pipe: Any, prompt: str, max_sequence_length: int | None) -> None:
    """Warn when T5 cuts the prompt at `max_sequence_length` tokens (CLIP's 77 only feed the pooled vector)."""
    limit = max_sequence_length or 512
    count = len(pipe.tokenizer_2(prompt, truncation=False).input_ids)
    if count > limit:
        warn(
            f"the prompt is {count} T5 tokens; this model reads only the first {limit} (max_sequence_length), "
            "the rest is cut. Shorten the prompt (put what matters first)."
        )


def flux_img2img_arguments(
    steps: int, strength: float, timesteps: tuple[int, ...] | None, *, height: int, width: int
) -> dict[str, Any]:
    """As given: FLUX's img2img runs at least one step for any strength > 0. The input's size is passed, or the
    pipeline would resize it to 1024²."""
    return {"num_inference_steps": steps, "strength": strength, "height": height, "width": width}
