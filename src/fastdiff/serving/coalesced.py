"""`CoalescingGenerator`: a generator whose concurrent calls share pipeline calls through a `Coalescer`, where that
pays. `FewStepGenerator.from_preset`/`from_pipeline` build one when `max_batch` > 1 (None: by device, CUDA only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..denoising import batch_key
from ..errors import FastDiffError
from ..generator import FewStepGenerator
from ..presets import Preset
from ..result import GenerationResult
from ..validation import Request
from .coalescing import DEFAULT_MAX_BATCH, BatchStats, Coalescer, check_batching

__all__ = ["CoalescingGenerator", "batching"]


def batching(device: torch.device, *, max_batch: int | None, max_wait_ms: float) -> tuple[int, float]:
    """The checked (`max_batch`, `max_wait_ms`) of a generator on `device`: `max_batch` None is by device
    (`DEFAULT_MAX_BATCH`: 8 on CUDA, else 1, calls taking turns)."""
    batch, wait = check_batching(DEFAULT_MAX_BATCH.get(device.type, 1) if max_batch is None else max_batch, max_wait_ms)
    if batch == 1 and wait and max_batch is None:
        raise FastDiffError(
            f"max_wait_ms waits for a batch to fill, and calls on {device.type} are not batched by default (no "
            "faster there, docs/serving.md): pass max_batch=4 with it, or drop max_wait_ms"
        )
    return batch, wait


class CoalescingGenerator(FewStepGenerator):
    """A `FewStepGenerator` whose compatible concurrent calls (same `batch_key`, up to `max_batch` images) run as one
    pipeline call; a call with its own generator or step callback, or `coalesce=False`, runs alone."""

    def __init__(
        self,
        preset: Preset,
        pipe: Any,
        *,
        max_batch: int = DEFAULT_MAX_BATCH["cuda"],
        max_wait_ms: float = 0.0,
        **kw: Any,
    ) -> None:
        """`kw`: `optimizations` and `weights`, as `FewStepGenerator` takes them."""
        super().__init__(preset, pipe, **kw)
        batch, wait = check_batching(max_batch, max_wait_ms)
        self.coalescing: Coalescer[Request, GenerationResult] = Coalescer(
            self._generate, key=batch_key, size=lambda r: r.num_images, max_batch=batch, max_wait_ms=wait
        )

    def _run(self, requests: Sequence[Request], *, coalesce: bool) -> list[GenerationResult]:
        solo = requests[0].pass_through is not None or not coalesce
        return self.coalescing.submit_call(requests, solo=solo)

    @property
    def stats(self) -> BatchStats:
        """The coalescing's counters (calls, batches, images per batch, queue wait p50/p95 in seconds)."""
        return self.coalescing.stats()

    @property
    def max_batch(self) -> int:
        return self.coalescing.max_batch
