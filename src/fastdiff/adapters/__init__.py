"""Model adapters: one per family (see `fastdiff.families`, which pairs each family with its adapter)."""

from __future__ import annotations

from .base import Embeddings, ModelAdapter
from .flux import FluxAdapter
from .flux2 import Flux2KleinAdapter
from .qwenimage import QwenImageAdapter
from .sana_sprint import SanaSprintAdapter
from .sd import StableDiffusionAdapter
from .sd3 import StableDiffusion3Adapter
from .sdxl import StableDiffusionXLAdapter
from .zimage import ZImageAdapter

__all__ = [
    "Embeddings",
    "Flux2KleinAdapter",
    "FluxAdapter",
    "ModelAdapter",
    "QwenImageAdapter",
    "SanaSprintAdapter",
    "StableDiffusion3Adapter",
    "StableDiffusionAdapter",
    "StableDiffusionXLAdapter",
    "ZImageAdapter",
]
