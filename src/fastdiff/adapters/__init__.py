"""Model adapters: one per family (see `fastdiff.families`, which pairs each family with its adapter)."""

from __future__ import annotations

from .base import Embeddings, ModelAdapter
from .sd import StableDiffusionAdapter
from .sdxl import StableDiffusionXLAdapter

__all__ = ["Embeddings", "ModelAdapter", "StableDiffusionAdapter", "StableDiffusionXLAdapter"]
