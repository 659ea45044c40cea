"""Training images for the trainer: the drawn `shapes` set, or a folder of images with one caption file each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import FastDiffError
from .shapes import make_shapes

__all__ = ["IMAGE_SUFFIXES", "image_folder", "shapes_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def shapes_images(n: int, *, seed: int, resolution: int = 64) -> tuple[torch.Tensor, list[str]]:
    """`n` drawn `shapes` images (N, 3, R, R) uint8 and their captions."""
    data = make_shapes(n, seed=seed, height=resolution, width=resolution)
    return torch.tensor(data.images).permute(0, 3, 1, 2).contiguous(), data.captions


def _square(path: Path, resolution: int) -> torch.Tensor:
    """The image at `path`, its shorter side resized to `resolution` and centre-cropped: (3, R, R) uint8."""
    try:
        with Image.open(path) as image:
            fitted = ImageOps.fit(image.convert("RGB"), (resolution, resolution), Image.Resampling.BICUBIC)
    except (OSError, UnidentifiedImageError) as err:
        raise FastDiffError(f"{str(path)!r} is not a readable image ({err})") from None
    return torch.from_numpy(np.array(fitted)).permute(2, 0, 1)  # np.array copies: the tensor owns writable memory


def image_folder(folder: str | Path, *, resolution: int) -> tuple[torch.Tensor, list[str]]:
    """Every image in `folder` with a caption in the `.txt` file of the same name: (N, 3, R, R) uint8, captions."""
    root = Path(folder)
    if not root.is_dir():
        raise FastDiffError(f"--data {str(root)!r} is neither 'shapes' nor a folder")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    missing = [p.name for p in paths if not p.with_suffix(".txt").is_file()]
    if missing:
        raise FastDiffError(f"{len(missing)} image(s) in {str(root)!r} have no caption file, e.g. {missing[0]!r}")
    if not paths:
        raise FastDiffError(f"no images ({', '.join(IMAGE_SUFFIXES)}) with caption .txt files in {str(root)!r}")
    images = torch.stack([_square(p, resolution) for p in paths])
    return images, [p.with_suffix(".txt").read_text().strip() for p in paths]
