"""Which shapes a compiled generator has seen: a new one compiles (and records a CUDA graph) on its first call."""

from __future__ import annotations

import threading

from .denoising import batch_key
from .errors import warn
from .validation import Request

__all__ = ["CompiledShapes"]


class CompiledShapes:
    """The shapes a compiled UNet and decoder specialize on: the image size and the UNet batch (doubled by CFG)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._seen: set[tuple[int, int, int]] = set()
        self._lock = threading.Lock()

    def mark(self, request: Request) -> tuple[int, int, int] | None:
        """Record the request's (height, width, UNet batch), its input image's size for img2img; None when seen."""
        width, height = batch_key(request)[1]
        shape = (height, width, request.num_images * (2 if request.guidance else 1))
        with self._lock:
            new = shape not in self._seen
            self._seen.add(shape)
        return shape if new else None

    def warn_if_new(self, request: Request) -> None:
        """A `FastDiffWarning` on the first call at a shape, which compiles (only when compiled)."""
        if not self.enabled or (shape := self.mark(request)) is None:
            return
        height, width, unet_batch = shape
        warn(
            f"first call at {width}x{height}, UNet batch {unet_batch}: torch.compile compiles for this shape now (this "
            "call is slow). Call gen.warmup(height=..., width=..., batch=..., guidance_scale=..., img2img=...) at "
            "load time for every shape you serve.",
        )
