"""Stable Diffusion 3.x (two CLIPs and T5 in one joint sequence, an MMDiT over 2×2 patches of 16-channel latents)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ..errors import warn
from .base import Embeddings, guided_embeddings, shifted_image_latents

__all__ = ["SIZE_MULTIPLE", "StableDiffusion3Adapter", "sd3_img2img_arguments", "sd3_truncation"]

SIZE_MULTIPLE = 16  # image sides: the VAE's 8 × the transformer's 2×2 patches (the pipeline's own check)
_T5_DEFAULT = 256  # StableDiffusion3Pipeline's max_sequence_length


class StableDiffusion3Adapter:
    """Adapter for `StableDiffusion3Pipeline` / `StableDiffusion3Img2ImgPipeline` (SD 3.5 Large Turbo). Unlike
    FLUX.1, guidance_scale > 1 runs classifier-free guidance, with the negative prompt through all three encoders."""

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
        """`encode_prompt` for one image, as the pipeline calls it (the same prompt for all three encoders)."""
        encoded = pipe.encode_prompt(
            prompt,
            None,
            None,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guidance,
            negative_prompt=negative_prompt,
            max_sequence_length=max_sequence_length or _T5_DEFAULT,
        )
        return guided_embeddings(*encoded, guidance=guidance)  # (1, 77 + L, 4096), (1, 2048) for the real model

    @torch.no_grad()
    def encode_image(
        self, pipe: Any, images: Sequence[Image.Image], generators: Sequence[torch.Generator], dtype: torch.dtype
    ) -> torch.Tensor:
        """As `StableDiffusion3Img2ImgPipeline.prepare_latents`: (VAE sample − shift) × scale, (B, 16, H/8, W/8),
        the input resized down to sides that are multiples of 16, as the pipeline resizes it to the height/width
        that `sd3_img2img_arguments` passes (one size: a batch shares its input's size)."""
        from ..validation import input_size  # here: validation imports the families, which import the adapters

        width, height = (side - side % SIZE_MULTIPLE for side in input_size(images[0]))
        return shifted_image_latents(pipe, images, generators, dtype, height=height, width=width)

    @torch.no_grad()
    def decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """Undo scale and shift, decode: StableDiffusion3Pipeline's `output_type="pil"` path (in the VAE's dtype)."""
        vae = pipe.vae
        latents = (latents / vae.config.scaling_factor + vae.config.shift_factor).to(vae.dtype)
        image = vae.decode(latents, return_dict=False)[0]  # (B, 3, H, W)
        images: list[Image.Image] = pipe.image_processor.postprocess(image, output_type="pil")
        return images


def sd3_truncation(pipe: Any, prompt: str, max_sequence_length: int | None) -> None:
    """Warn when T5 cuts the prompt at `max_sequence_length` tokens (no encoder reads the rest), else when the two
    CLIPs cut it at 77 (their part of the joint sequence and the pooled vector that modulates every block)."""
    limit = max_sequence_length or _T5_DEFAULT
    t5 = pipe.tokenizer_3  # None in a pipeline loaded with text_encoder_3=None (zeros stand for T5, as diffusers does)
    count = 0 if t5 is None else len(t5(prompt, truncation=False).input_ids)
    if count > limit:
        warn(
            f"the prompt is {count} T5 tokens; this model reads only the first {limit} (max_sequence_length), "
            "the rest is cut. Shorten the prompt (put what matters first)."
        )
        return
    tokenizer = pipe.tokenizer
    count = len(tokenizer(prompt, truncation=False).input_ids)
    if count > tokenizer.model_max_length:
        warn(
            f"the prompt is {count} CLIP tokens; the two CLIP encoders read only the first "
            f"{tokenizer.model_max_length} (their part of the sequence and the pooled vector), T5 reads it all. "
            "Put what matters first."
        )


def sd3_img2img_arguments(
    steps: int, strength: float, timesteps: tuple[int, ...] | None, *, height: int, width: int
) -> dict[str, Any]:
    """As given (SD3's img2img runs at least one step for any strength > 0), at the input's size rounded down to
    multiples of 16: the pipeline would resize it to 1024² without height/width, and refuse other sides."""
    size = {"height": height - height % SIZE_MULTIPLE, "width": width - width % SIZE_MULTIPLE}
    return {"num_inference_steps": steps, "strength": strength, **size}
