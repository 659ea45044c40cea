"""Model adapters: one per family, looked up by `Preset.family`."""

from __future__ import annotations

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
