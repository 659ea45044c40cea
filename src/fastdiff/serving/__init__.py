"""Serving a generator: what runs around `FewStepGenerator`, which itself makes one pipeline call at a time.

- `coalescing`: a queue that batches concurrent calls into shared pipeline calls (`max_batch`; on by default on
  CUDA, where a batch costs far less than its calls; `gen.coalescing`, `gen.stats`);
- `mapping`: `gen.map(prompts)`, many prompts in one process, in order, in batches;
- `live`: `LiveSession`, images that follow changing inputs with no backlog (`fastdiff demo`);
- `bulk`: `fastdiff batch`, a prompt file to a folder of images, resumable, locally or on Ray.

The names below load on first use (PEP 562), so that `fastdiff batch --help` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .coalescing import BatchStats, Coalescer
    from .live import UNSET, Frame, LiveSession, LiveState, LiveStats

__all__ = ["UNSET", "BatchStats", "Coalescer", "Frame", "LiveSession", "LiveState", "LiveStats"]

_HOMES = {"BatchStats": ".coalescing", "Coalescer": ".coalescing"} | dict.fromkeys(
    ("UNSET", "Frame", "LiveSession", "LiveState", "LiveStats"), ".live"
)


def __getattr__(name: str) -> object:
    """A public name, imported from its module when first asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
