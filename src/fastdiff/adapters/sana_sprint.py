"""SANA-Sprint (a Gemma-2 prompt after the pipeline's "complex human instruction", a linear-attention transformer
with embedded guidance, the SCM sampler, DC-AE latents at 1/32 of the image, sizes binned to ~1024² and resized
back)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import SanaSprintPipeline
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_1024_BIN
from PIL import Image

from ..errors import warn
from .base import Embeddings

__all__ = ["COMPLEX_HUMAN_INSTRUCTION", "SanaSprintAdapter", "gemma_truncation", "scm_step_arguments"]

# The instruction SanaSprintPipeline prepends to every prompt by default: its own default, read from its signature.
COMPLEX_HUMAN_INSTRUCTION: list[str] = (
    inspect.signature(SanaSprintPipeline.__call__).parameters["complex_human_instruction"].default
)
_MAX_SEQUENCE_LENGTH = 300  # SanaSprintPipeline's own default


class SanaSprintAdapter:
    """Adapter for `SanaSprintPipeline` / `SanaSprintImg2ImgPipeline`. Guidance is embedded (the transformer reads
    `guidance_scale`), never classifier-free: there are no negative embeddings."""

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
        """`encode_prompt` for one image with the pipeline's default instruction, as its call makes it."""
        embeds, mask = pipe.encode_prompt(
            prompt,
            num_images_per_prompt=1,
            device=device,
            max_sequence_length=max_sequence_length or _MAX_SEQUENCE_LENGTH,
            complex_human_instruction=COMPLEX_HUMAN_INSTRUCTION,
        )
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}  # (1, L, 2304), (1, L) for the real model

    @torch.no_grad()
    def encode_image(
        self, pipe: Any, images: Sequence[Image.Image], generators: Sequence[torch.Generator], dtype: torch.dtype
    ) -> torch.Tensor:
        """The img2img pipeline's input as (B, 3, H, W) pixels in [0, 1] at its binned size, resized as its
        `prepare_image` resizes each kind of input: it normalizes and encodes them itself (DC-AE samples nothing,
        so the generators are not drawn from), and passing latents instead would be resized as an image."""
        from ..validation import input_size  # validation reads the families, which hold this adapter

        processor = pipe.image_processor
        width, height = input_size(images[0])
        binned = processor.classify_height_width_bin(height, width, ratios=ASPECT_RATIO_1024_BIN)
        pixels = torch.cat([_pixels(processor, image, *binned) for image in images])
        return pixels.to(pipe._execution_device)

    @torch.no_grad()
    def decode(
        self, pipe: Any, latents: torch.Tensor, *, height: int | None = None, width: int | None = None
    ) -> list[Image.Image]:
        """DC-AE decode at the binned size, resized and cropped back to `height` × `width` (the size asked): the
        pipeline's `output_type="pil"` path with `use_resolution_binning`."""
        if height is None or width is None:
            raise TypeError("SanaSprintAdapter.decode needs the image's height= and width= to undo the binning")
        vae = pipe.vae
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        image = pipe.image_processor.resize_and_crop_tensor(image, width, height)
        images: list[Image.Image] = pipe.image_processor.postprocess(image, output_type="pil")
        return images


def _pixels(processor: Any, image: Any, height: int, width: int) -> torch.Tensor:
    """One input at (height, width) in [0, 1], (1, 3, H, W): diffusers' `preprocess` for PIL and numpy, the img2img
    pipeline's bilinear resize for tensors; only the normalization to [-1, 1] is left to the pipeline."""
    if isinstance(image, Image.Image):
        pixels: torch.Tensor = processor.numpy_to_pt(processor.pil_to_numpy(processor.resize(image, height, width)))
        return pixels
    if isinstance(image, np.ndarray):
        return processor.resize(processor.numpy_to_pt(image[None] if image.ndim == 3 else image), height, width)  # type: ignore[no-any-return]
    tensor: torch.Tensor = image if image.ndim == 4 else image.unsqueeze(0)
    if tuple(tensor.shape[-2:]) == (height, width):
        return tensor
    return F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)


def gemma_truncation(pipe: Any, prompt: str, max_sequence_length: int | None) -> None:
    """Warn when Gemma cuts the prompt: the pipeline keeps `max_sequence_length` − 2 of its tokens after the
    instruction it prepends."""
    room = (max_sequence_length or _MAX_SEQUENCE_LENGTH) - 2
    instruction = "\n".join(COMPLEX_HUMAN_INSTRUCTION)
    count = len(pipe.tokenizer.encode(instruction + prompt)) - len(pipe.tokenizer.encode(instruction))
    if count > room:
        warn(
            f"the prompt is {count} Gemma tokens; this model reads only the first {room} (max_sequence_length), "
            "the rest is cut. Shorten the prompt (put what matters first)."
        )


def scm_step_arguments(steps: int) -> dict[str, Any]:
    """The SCM sampler's intermediate timestep: the pipeline's default (1.3) is for 2 steps only, and it refuses
    one for any other count."""
    return {} if steps == 2 else {"intermediate_timesteps": None}
