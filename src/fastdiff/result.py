"""What a generation returns: the images, what was used to make them, and where the time went."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

__all__ = ["GenerationResult", "image_grid", "joined"]


def image_grid(images: list[Image.Image], *, columns: int | None = None) -> Image.Image:
    """Paste images into one near-square grid (row-major), the way a batch is shown in a notebook."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    cols = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid


@dataclass(frozen=True)
class GenerationResult:
    """Images plus what was actually used (seed chosen when None, steps, preset) and per-stage timings.

    `timings` holds seconds measured on this call for "encode", "denoise", "decode" and "total" (their sum: the
    image's own time; the device is synchronized before each clock read), and "compile" when the CPU engine made a
    module ready for a new shape during the call (converted it, or compiled the disk cache's copy): that time is
    kept out of the others, since no later call at this shape spends it.

    Image *i* was made from seed `seed + i` (with a list of prompts too: in prompt order, each prompt's `num_images`
    in turn). With `generator=`, `seeds` holds each image's generator's `initial_seed()` (one generator: the same
    for every image) and `seed` the first: `seed=seeds[i]` alone makes `images[i]` again only where that generator
    was fresh from `manual_seed` on the CPU and served that image alone (diffusers'
    `[torch.Generator().manual_seed(s) for s in seeds]`). In Jupyter the result shows itself as its image, or a
    grid for several.
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
        """All images in one grid."""
        return image_grid(self.images, columns=columns)

    def _repr_png_(self) -> bytes | None:
        return (self.images[0] if len(self.images) == 1 else self.grid())._repr_png_()

    def __repr__(self) -> str:
        ms = ", ".join(f"{k}={v * 1000:.1f}ms" for k, v in self.timings.items())
        return (
            f"GenerationResult({len(self.images)} image(s) {self.width}x{self.height}, preset={self.preset!r}, "
            f"steps={self.steps}, seed={self.seed}, {ms})"
        )


def joined(results: Sequence[GenerationResult]) -> GenerationResult:
    """One call's results (one per prompt of a list, made by one pipeline call: they share its timings) as one: the
    images (and their generators' seeds) in order, the first's seed."""
    if len(results) == 1:
        return results[0]
    images = [image for r in results for image in r.images]
    return dataclasses.replace(results[0], images=images, image_seeds=tuple(s for r in results for s in r.image_seeds))
