"""Image metrics of the ADD ablation: a Fréchet distance of features (as FID) and luminance gradient energy
(sharpness against the real images, split at their edges). Re-exported by `fastdiff.distill.ablation`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["energy_map", "frechet_distance", "gradient_energy", "sharpness", "sharpness_split"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance of Gaussians fitted to features a (N, D) and b (M, D), computed in float64 (as FID)."""
    a, b = a.double(), b.double()
    mean = a.mean(dim=0) - b.mean(dim=0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T  # cov_a^½
    inner = root @ cov_b @ root  # tr √(cov_a cov_b) = Σ √eig(cov_a^½ cov_b cov_a^½), which is symmetric PSD
    cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    return float(mean @ mean + cov_a.trace() + cov_b.trace() - 2 * cross)


def energy_map(images: torch.Tensor) -> torch.Tensor:
    """Squared x plus y forward differences of luminance (in [0, 1]) at each pixel (N, H, W) of images in [-1, 1]."""
    luma = torch.tensor(_LUMA, dtype=torch.float64).view(1, 3, 1, 1)
    y = ((images.double() + 1) / 2 * luma).sum(dim=1)  # (N, H, W)
    dx, dy = F.pad(y[:, :, 1:] - y[:, :, :-1], (0, 1)), F.pad(y[:, 1:, :] - y[:, :-1, :], (0, 0, 0, 1))
    return dx.pow(2) + dy.pow(2)


def gradient_energy(images: torch.Tensor) -> torch.Tensor:
    """Mean luminance gradient energy (`energy_map` averaged) per image (N,)."""
    return energy_map(images).mean(dim=(1, 2))


def sharpness(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean gradient energy of `images` over that of `reference` (1: as sharp as the real images)."""
    return float(gradient_energy(images).mean() / gradient_energy(reference).mean())


def sharpness_split(images: torch.Tensor, reference: torch.Tensor, *, band: int = 2) -> tuple[float, float]:
    """`sharpness` split into the energy within `band` px of the reference's edges and the rest (speckle, strays)."""
    edges = (reference[:, :, :, 1:] != reference[:, :, :, :-1]).any(dim=1)  # any channel changes: (N, H, W - 1)
    edges = F.pad(edges, (0, 1)) | F.pad((reference[:, :, 1:] != reference[:, :, :-1]).any(dim=1), (0, 0, 0, 1))
    near = F.max_pool2d(edges[:, None].float(), 2 * band + 1, stride=1, padding=band)[:, 0] > 0
    energy, total = energy_map(images), energy_map(reference).sum()
    return float(energy[near].sum() / total), float(energy[~near].sum() / total)
