"""The one interface a model family implements: prompt → embeddings, latents → images."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from PIL import Image

__all__ = ["Embeddings", "ModelAdapter"]

# Keyword arguments for the diffusers pipeline call (`prompt_embeds=`, `pooled_prompt_embeds=`, …).
Embeddings = dict[str, torch.Tensor]


class ModelAdapter(Protocol):
    """What fastdiff needs from a model family; everything else is the diffusers pipeline's own `__call__`.

    `encode` returns the embeddings of ONE image's prompt, exactly as the pipeline's `encode_prompt` computes
    them (negative embeddings only when `guidance` is true), ready to be passed to the pipeline as keyword
    arguments; the pipeline repeats them per image. `decode` turns final latents `(B, 4, H/8, W/8)` into PIL
    images exactly as the pipeline's own `output_type="pil"` path does, so that fastdiff matches diffusers
    pixel for pixel while timing each stage apart.
    """

    def encode(self, pipe: Any, prompt: str, negative_prompt: str | None, *, guidance: bool) -> Embeddings:
        """Encode one prompt (and its negative when `guidance`) with the pipeline's text encoder(s)."""
        ...

    def decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """Decode final latents to images, mirroring the pipeline's decode and post-processing."""
        ...
