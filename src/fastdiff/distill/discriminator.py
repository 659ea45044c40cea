"""The LADD discriminator (Sauer et al. 2024): the frozen teacher UNet's down- and mid-block features of re-noised
latents, each scored by a light head (StyleGAN-T's) conditioned on the pooled text and the noise level.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

__all__ = ["DiscriminatorHead", "LADDDiscriminator", "TeacherFeatures", "default_layers", "feature_channels"]


class _Stop(Exception):
    """Raised by the last hook: the teacher's up blocks are not needed for the features."""


def feature_channels(unet: Any, layers: Sequence[int]) -> list[int]:
    """Channels of each chosen layer's output (a down block's is its `block_out_channels`, the mid block's the last)."""
    channels = [*unet.config.block_out_channels, unet.config.block_out_channels[-1]]
    return [channels[i] for i in layers]


def default_layers(unet: Any) -> tuple[int, ...]:
    """Every down block and the mid block."""
    return tuple(range(len(unet.down_blocks) + 1))


class TeacherFeatures:
    """Calls the frozen teacher UNet and returns its chosen down/mid-block outputs, in forward order."""

    def __init__(self, unet: Any, layers: Sequence[int]) -> None:
        self.unet = unet
        self.layers = tuple(sorted(layers))
        blocks = [*unet.down_blocks, unet.mid_block]  # layer n = len(down_blocks) is the mid block
        self._modules = [blocks[i] for i in self.layers]

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, **conditioning: Any) -> list[torch.Tensor]:
        """Features (B, C_i, h_i, w_i) of `sample` at `timestep`; gradients reach `sample` when it requires them."""
        found: list[torch.Tensor] = []
        last = self._modules[-1]

        def keep(module: nn.Module, _inputs: Any, output: Any) -> None:
            found.append(output[0] if isinstance(output, tuple) else output)  # down blocks return (h, skips)
            if module is last:
                raise _Stop

        with contextlib.ExitStack() as hooks, contextlib.suppress(_Stop):
            for module in self._modules:
                hooks.enter_context(module.register_forward_hook(keep))
            self.unet(sample, timestep, return_dict=False, **conditioning)
        return found


class DiscriminatorHead(nn.Module):
    """Patch logits (B, h·w) of one feature map, conditioned by projection on `cond` (Miyato & Koyama 2018)."""

    def __init__(self, channels: int, cond_dim: int, hidden: int = 64) -> None:
        super().__init__()
        groups = math.gcd(8, hidden)
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.GroupNorm(groups, hidden),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.GroupNorm(groups, hidden),
            nn.LeakyReLU(0.2),
        )
        self.out = nn.Conv2d(hidden, 1, 1)
        self.project = nn.Linear(cond_dim, hidden)
        self.scale = hidden**-0.5

    def forward(self, feature: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """`feature` (B, C, h, w), `cond` (B, cond_dim) → (B, h·w)."""
        dtype = self.out.weight.dtype  # the teacher's features may come in its (half) dtype
        h = self.body(feature.to(dtype))  # (B, hidden, h, w)
        projection = (h * self.project(cond.to(dtype))[:, :, None, None]).sum(dim=1, keepdim=True) * self.scale
        logits: torch.Tensor = (self.out(h) + projection).flatten(1)
        return logits


class LADDDiscriminator(nn.Module):
    """The trainable part of the discriminator: one head per teacher layer (the teacher itself stays outside)."""

    def __init__(self, channels: Sequence[int], *, text_dim: int, hidden: int = 64, time_dim: int = 64) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.heads = nn.ModuleList(DiscriminatorHead(c, text_dim + time_dim, hidden) for c in channels)

    def forward(
        self, features: Sequence[torch.Tensor], pooled_text: torch.Tensor, timesteps: torch.Tensor
    ) -> list[torch.Tensor]:
        """One (B, h·w) logit map per head, for features of inputs noised to `timesteps` (B,)."""
        t_emb = get_timestep_embedding(timesteps, self.time_dim).to(pooled_text.dtype)  # (B, time_dim)
        cond = torch.cat([pooled_text, t_emb], dim=1)  # (B, text_dim + time_dim)
        return [head(f, cond) for head, f in zip(self.heads, features, strict=True)]
