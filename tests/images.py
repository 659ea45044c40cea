"""Image comparison shared by the tolerance tests, and a photo-like input for img2img."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def gradient(height: int, width: int) -> Image.Image:
    """A smooth two-axis colour gradient: an img2img input with structure the VAE keeps."""
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], -1).astype(np.uint8))


def psnr(a: Any, b: Any) -> float:
    """Peak signal-to-noise ratio of two 8-bit images (arrays or PIL images), in dB; inf when equal."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
