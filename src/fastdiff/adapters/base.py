"""The one interface a model family implements: prompt → embeddings, image → latents, latents → images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from PIL import Image

from ..errors import warn

__all__ = [
    "Embeddings",
    "ModelAdapter",
    "clip_truncation",
    "guided_embeddings",
    "image_latents",
    "shifted_image_latents",
    "unet_img2img_arguments",
]

# Keyword arguments for the diffusers pipeline call (`prompt_embeds=`, `pooled_prompt_embeds=`, …): a tensor
# batched along dim 0, or a list with one tensor per image where lengths differ (Z-Image).
Embeddings = dict[str, torch.Tensor | list[torch.Tensor]]


class ModelAdapter(Protocol):
    """What fastdiff needs from a model family; everything else is the diffusers pipeline's own `__call__`.

    `encode` returns the embeddings of ONE image's prompt, exactly as the pipeline's `encode_prompt` computes
    them on `device` (the generator's, read once: diffusers' `_execution_device` walks every module) (negative
    embeddings only when `guidance` is true), ready to be passed to the pipeline as keyword
    arguments; the pipeline repeats them per image. `encode_image` turns img2img inputs into the scaled initial
    latents `(B, 4, H/8, W/8)` in `dtype` that the img2img pipeline's `prepare_latents` would compute before adding
    noise (one VAE sample per generator, drawn from that generator), whatever the VAE's own dtype. `decode` turns
    final latents into PIL images exactly as the pipeline's own `output_type="pil"` path does. So fastdiff
    matches diffusers pixel for pixel while timing each stage apart, and a VAE in another dtype than the UNet
    (bf16 on CUDA) works on every path. A T5, Qwen3 or Gemma family's `encode` also takes `max_sequence_length=`
    (the preset's); a `decode` that takes `height=`/`width=` gets the size asked (FLUX.1's packed latents do not
    carry it, SANA-Sprint's binned ones carry another).
    """

    def encode(
        self, pipe: Any, prompt: str, negative_prompt: str | None, *, guidance: bool, device: torch.device
    ) -> Embeddings:
        """Encode one prompt (and its negative when `guidance`) with the pipeline's text encoder(s)."""
        ...

    def encode_image(
        self, pipe: Any, images: Sequence[Image.Image], generators: Sequence[torch.Generator], dtype: torch.dtype
    ) -> torch.Tensor:
        """Initial img2img latents: image i sampled through the VAE encoder with generator i."""
        ...

    def decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """Decode final latents to images, mirroring the pipeline's decode and post-processing."""
        ...


def image_latents(
    pipe: Any,
    images: Sequence[Image.Image],
    generators: Sequence[torch.Generator],
    dtype: torch.dtype,
    **size: int,
) -> torch.Tensor:
    """`vae.encode` of each image (preprocessed as the pipeline does, resized to `height=`/`width=` where given,
    cast as it does to `dtype`, then to the VAE's dtype) sampled with its generator, as diffusers' `prepare_latents`
    does for a list of generators; unscaled. A video VAE (Qwen-Image's) encodes each image as one frame: latents
    (B, C, 1, H/8, W/8)."""
    vae, device = pipe.vae, pipe._execution_device
    frames = "temperal_downsample" in vae.config  # diffusers' spelling, in its video VAEs' configs
    pixels: dict[int, torch.Tensor] = {}  # each distinct image preprocessed once: (1, 3, H, W) in [-1, 1]
    samples = []
    for image, generator in zip(images, generators, strict=True):
        if id(image) not in pixels:
            pixel = pipe.image_processor.preprocess(image, **size).to(device, dtype).to(vae.dtype)
            pixels[id(image)] = pixel.unsqueeze(2) if frames else pixel
        samples.append(retrieve_latents(vae.encode(pixels[id(image)]), generator=generator))
    return torch.cat(samples)


def shifted_image_latents(
    pipe: Any,
    images: Sequence[Image.Image],
    generators: Sequence[torch.Generator],
    dtype: torch.dtype,
    **size: int,
) -> torch.Tensor:
    """`image_latents` shifted and scaled as the flow-matching img2img pipelines (FLUX.1, Z-Image, SD3) do it:
    (sample − shift) × scale in `dtype`."""
    config = pipe.vae.config
    latents = image_latents(pipe, images, generators, dtype, **size)
    shifted: torch.Tensor = (latents - config.shift_factor) * config.scaling_factor
    return shifted.to(dtype)


def guided_embeddings(
    prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor | None,
    pooled_prompt_embeds: torch.Tensor,
    negative_pooled_prompt_embeds: torch.Tensor | None,
    *,
    guidance: bool,
) -> Embeddings:
    """What SDXL's and SD3's `encode_prompt` return, as the call's keyword arguments: the negatives only with
    classifier-free guidance."""
    embeds: Embeddings = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds}
    if guidance:
        assert negative_prompt_embeds is not None and negative_pooled_prompt_embeds is not None
        embeds["negative_prompt_embeds"] = negative_prompt_embeds
        embeds["negative_pooled_prompt_embeds"] = negative_pooled_prompt_embeds
    return embeds


def clip_truncation(pipe: Any, prompt: str, max_sequence_length: int | None) -> None:
    """Warn when CLIP will cut the prompt (diffusers only logs it, which notebooks and services never show): the
    prompt check of the UNet families (`FamilySpec.warn_if_truncated`)."""
    tokenizer = pipe.tokenizer
    count = len(tokenizer(prompt, truncation=False).input_ids)
    if count > tokenizer.model_max_length:
        warn(
            f"the prompt is {count} tokens; CLIP reads only the first {tokenizer.model_max_length}, the rest "
            "is cut. Shorten the prompt (put what matters first).",
        )


def unet_img2img_arguments(
    steps: int, strength: float, timesteps: tuple[int, ...] | None, *, height: int, width: int
) -> dict[str, Any]:
    """The UNet img2img pipelines' schedule (`schedulers.img2img_schedule`: lengthened where diffusers would run no
    step) at the input's own size (they take no height/width): `FamilySpec.img2img_arguments`."""
    from ..schedulers import img2img_schedule

    steps, strength, timesteps = img2img_schedule(steps, strength, timesteps)
    explicit = {} if timesteps is None else {"timesteps": list(timesteps)}
    return {"num_inference_steps": steps, "strength": strength, **explicit}
