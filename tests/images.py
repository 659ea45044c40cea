"""Image comparison shared by the tolerance tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def psnr(a: Any, b: Any) -> float:
    """Peak signal-to-noise ratio of two 8-bit images (arrays or PIL images), in dB; inf when equal."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
