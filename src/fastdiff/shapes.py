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

    @staticmethod
    def key(request: Request) -> tuple[int, int, int]:
        """(height, width, UNet batch) of a request; img2img's size is its input image's."""
        width, height = batch_key(request)[1]
        return (height, width, request.num_images * (2 if request.guidance else 1))

    def mark(self, request: Request) -> bool:
        """Record the request's shape; True when it was new."""
        key = self.key(request)
        with self._lock:
            new = key not in self._seen
            self._seen.add(key)
        return new

    def warn_if_new(self, request: Request) -> None:
        """A `FastDiffWarning` on the first call at a shape, which compiles (only when compiled)."""
        if not self.enabled or not self.mark(request):
            return
        height, width, unet_batch = self.key(request)
        warn(
            f"first call at {width}x{height}, UNet batch {unet_batch}: torch.compile compiles for this shape now (this "
            "call is slow). Call gen.warmup(height=..., width=..., batch=..., guidance_scale=..., img2img=...) at "
            "load time for every shape you serve.",
        )
