"""The three terms of Adversarial Diffusion Distillation (Sauer et al. 2023), as free functions on tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["distillation_loss", "hinge_d_loss", "hinge_g_loss", "predict_x0", "r1_penalty"]


def predict_x0(
    output: torch.Tensor, sample: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, *, prediction_type: str
) -> torch.Tensor:
    """x̂0 from a UNet output at x_t = α·x0 + σ·ε (epsilon or v prediction, Salimans & Ho 2022 for v)."""
    alpha, sigma = alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        return (sample - sigma * output) / alpha
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * output
    if prediction_type == "sample":
        return output
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def distillation_loss(student_x0: torch.Tensor, teacher_x0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """c(s)·‖x̂θ − sg(x̂ψ)‖², the squared norm summed over each sample's elements, then the batch mean (ADD, Sauer et al.
    2023, eq. 4). A mean over elements would divide λ by their number (256 for 4×8×8 latents) against the paper's
    balance with the adversarial term."""
    per_sample = F.mse_loss(student_x0, teacher_x0.detach(), reduction="none").sum(dim=(1, 2, 3))
    return (weight * per_sample).mean()


def hinge_d_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_heads relu(1 − D(real)) + relu(1 + D(fake)), the discriminator's hinge loss (ADD, Sauer et al. 2023, eq. 3)."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True)]
    return torch.stack(terms).sum()


def hinge_g_loss(fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_heads −D(fake), the generator's side of the hinge loss (ADD, Sauer et al. 2023, eq. 2)."""
    return torch.stack([-f.mean() for f in fake]).sum()


def r1_penalty(scores: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """‖∇_x D(x)‖² on real inputs x (Mescheder et al. 2018), which must require grad; the graph is kept to train D."""
    total = torch.stack([s.sum() for s in scores]).sum()
    grads = torch.autograd.grad(total, list(inputs), create_graph=True)
    return torch.stack([g.pow(2).flatten(1).sum(dim=1) for g in grads]).sum(dim=0).mean()
