"""Sub-pixel convolution (Shi et al. 2016): nearest 2x upsampling then a 3x3 conv, as one 2x2 conv of the small
input with 4x the output channels whose phases interleave into the 2x output: 16 taps per input pixel instead
of 36, the same sums. The math only; `cpu_kernels.SubpixelUpsample2D` swaps it into diffusers' `Upsample2D`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["subpixel_taps", "subpixel_upsample"]

# Nearest 2x upsampling then a 3x3 conv equals, per output phase (row parity a, column parity b), a 2x2 conv of
# the low-resolution input whose taps are sums of the 3x3 taps: `_PHASE_ROWS[a]` maps 3 taps to 2.
_PHASE_ROWS = (((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)))  # fmt: skip


def subpixel_taps(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The 2x2 conv (4x the output channels, phase-major) that equals nearest 2x upsampling then `weight`'s 3x3
    conv, and its bias."""
    rows = torch.tensor(_PHASE_ROWS, dtype=weight.dtype)
    taps = [torch.einsum("rk,oikl,sl->oirs", rows[a], weight.detach(), rows[b]) for a in (0, 1) for b in (0, 1)]
    return torch.cat(taps).contiguous(), None if bias is None else bias.detach().repeat(4)


def subpixel_upsample(x: Tensor, taps: Tensor, bias: Tensor | None) -> Tensor:
    """`subpixel_taps`' conv of `x` with its four phases interleaved into the 2x output, in plain torch ops (what
    a graph compiler such as OpenVINO traces)."""
    batch, _, height, width = x.shape
    out = F.conv2d(x, taps, bias, padding=1)  # (B, 4·C, H+1, W+1)
    channels = out.shape[1] // 4
    rows = [
        torch.stack([out[:, (2 * a + b) * channels : (2 * a + b + 1) * channels, a : a + height, b : b + width]
                     for b in (0, 1)], dim=-1)
        for a in (0, 1)
    ]  # fmt: skip
    return torch.stack(rows, dim=3).reshape(batch, channels, 2 * height, 2 * width)  # (B, C, H, 2, W, 2) → 2H, 2W
