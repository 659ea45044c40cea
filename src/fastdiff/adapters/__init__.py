"""Model adapters: one per family, looked up by `Preset.family`."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

from ..errors import FastDiffError, did_you_mean
from .base import Embeddings, ModelAdapter
from .sd import StableDiffusionAdapter
from .sdxl import StableDiffusionXLAdapter

__all__ = [
    "ADAPTERS",
    "Embeddings",
    "ModelAdapter",
    "StableDiffusionAdapter",
    "StableDiffusionXLAdapter",
    "adapter_for",
]

ADAPTERS: dict[str, ModelAdapter] = {
    "sd1": StableDiffusionAdapter(),
    "sd2": StableDiffusionAdapter(),
    "sdxl": StableDiffusionXLAdapter(),
}


def adapter_for(family: str) -> ModelAdapter:
    """The adapter of a family ("sd1", "sd2", "sdxl"); register new families by adding to `ADAPTERS`."""
    try:
        return ADAPTERS[family]
    except KeyError:
        raise FastDiffError(f"no adapter for family {family!r}" + did_you_mean(family, ADAPTERS)) from None


IMG2IMG_CLASSES: dict[str, Any] = {
    "sd1": StableDiffusionImg2ImgPipeline,
    "sd2": StableDiffusionImg2ImgPipeline,
    "sdxl": StableDiffusionXLImg2ImgPipeline,
}


@functools.cache
def default_strength(family: str) -> float:
    """The img2img pipeline's own default strength (0.3 for SDXL, 0.8 for SD), as diffusers would use it."""
    return float(inspect.signature(IMG2IMG_CLASSES[family].__call__).parameters["strength"].default)
