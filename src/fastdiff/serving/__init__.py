"""Serving a generator: what runs around `FewStepGenerator`, which itself makes one pipeline call at a time.

- `coalescing`: a queue that batches concurrent calls into shared pipeline calls (`max_batch`; on by default on
  CUDA, where a batch costs far less than its calls; `gen.coalescing`, `gen.stats`);
- `mapping`: `gen.map(prompts)`, many prompts in one process, in order, in batches;
- `live`: `LiveSession`, images that follow changing inputs with no backlog (`fastdiff demo`);
- `bulk`: `fastdiff batch`, a prompt file to a folder of images, resumable, locally or on Ray.

None of them imports torch, so that `fastdiff batch --help` starts at once.
"""

from .coalescing import BatchStats, Coalescer
from .live import UNSET, Frame, LiveSession, LiveState, LiveStats

__all__ = ["UNSET", "BatchStats", "Coalescer", "Frame", "LiveSession", "LiveState", "LiveStats"]
