"""What a generation returns: the images, what was used to make them, and where the time went."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

__all__ = ["GenerationResult", "joined"]


@dataclass(frozen=True)
class GenerationResult:
    """Images plus what was actually used (the seed chosen when None, steps, preset) and per-stage timings.

    `timings`: seconds for "encode", "denoise", "decode" and "total" (their sum), and "compile" when the CPU engine
    made a module ready for a new shape during the call (kept out of the others: later calls do not spend it).
    Image *i* was made from seed `seed + i`; with `generator=`, `seeds` holds each image's generator's
    `initial_seed()`. In Jupyter the result shows itself as its image, or a grid for several.
    """

    images: list[Image.Image]
    seed: int
    steps: int
    preset: str
    guidance_scale: float
    height: int
    width: int
    timings: dict[str, float] = field(default_factory=dict)
    image_seeds: tuple[int, ...] = ()  # per image, where they do not follow `seed + i` (a call with `generator=`)

    @property
    def image(self) -> Image.Image:
        """The first image (the only one unless num_images > 1)."""
        return self.images[0]

    @property
    def seeds(self) -> list[int]:
        """The seed of each image: `seed=seeds[i]` alone gives `images[i]` again (within 1/255: batched kernels)."""
        if self.image_seeds:
            return list(self.image_seeds)
        return [self.seed + i for i in range(len(self.images))]

    def grid(self, *, columns: int | None = None) -> Image.Image:
        """All images in one near-square grid (row-major), the way a batch is shown in a notebook."""
        cols = columns or math.ceil(math.sqrt(len(self.images)))
        w, h = self.images[0].size
        grid = Image.new("RGB", (cols * w, math.ceil(len(self.images) / cols) * h))
        for i, image in enumerate(self.images):
            grid.paste(image, ((i % cols) * w, (i // cols) * h))
        return grid

    def _repr_png_(self) -> bytes | None:
        return (self.images[0] if len(self.images) == 1 else self.grid())._repr_png_()

    def __repr__(self) -> str:
        ms = ", ".join(f"{k}={v * 1000:.1f}ms" for k, v in self.timings.items())
        return (
            f"GenerationResult({len(self.images)} image(s) {self.width}x{self.height}, preset={self.preset!r}, "
            f"steps={self.steps}, seed={self.seed}, {ms})"
        )


def joined(results: Sequence[GenerationResult]) -> GenerationResult:
    """One call's results (one per prompt, from one pipeline call) as one: the images in order, the first's seed."""
    if len(results) == 1:
        return results[0]
    images = [image for r in results for image in r.images]
    return dataclasses.replace(results[0], images=images, image_seeds=tuple(s for r in results for s in r.image_seeds))
