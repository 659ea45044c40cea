"""One ADD iteration (Sauer et al. 2023, Algorithm 1): a student update, then a discriminator update.

All randomness (batch, timesteps, noise) is drawn from one CPU generator, so a run is a function of its seed
and a checkpoint that stores the generator resumes bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .conditioning import Conditioning, NoiseSchedule
from .config import ADDConfig
from .discriminator import TeacherFeatures
from .losses import distillation_loss, hinge_d_loss, hinge_g_loss, predict_x0, r1_penalty

__all__ = ["Batch", "Models", "discriminator_step", "generator_step"]


@dataclass
class Models:
    """What a step touches: the trained student and heads (prepared by accelerate) and the frozen teacher."""

    student: Any
    teacher: Any
    heads: Any  # LADDDiscriminator, possibly wrapped by accelerate
    features: TeacherFeatures
    schedule: NoiseSchedule
    uncond: Conditioning | None  # the empty prompt's conditioning (1 row), for a guided teacher


@dataclass
class Batch:
    """Real latents (B, 4, h, w), their captions' conditioning and the generator that draws all noise."""

    latents: torch.Tensor
    cond: Conditioning
    generator: torch.Generator

    def randn(self) -> torch.Tensor:
        """Gaussian noise shaped like the latents."""
        noise = torch.randn(self.latents.shape, generator=self.generator)
        return noise.to(self.latents.device, self.latents.dtype)

    def randint(self, lo: int, hi: int) -> torch.Tensor:
        """(B,) integers uniform in [lo, hi]."""
        n = self.latents.shape[0]
        return torch.randint(lo, hi + 1, (n,), generator=self.generator).to(self.latents.device)


def _teacher_x0(models: Models, x_s: torch.Tensor, s: torch.Tensor, cond: Conditioning, scale: float) -> torch.Tensor:
    """The frozen teacher's one-step x̂0 at (x_s, s), with classifier-free guidance when `scale` > 1."""
    alpha, sigma = models.schedule.alpha_sigma(s)
    with torch.no_grad():
        if scale > 1.0 and models.uncond is not None:
            both = cond.cat(models.uncond.repeat(x_s.shape[0]))
            out = models.teacher(torch.cat([x_s, x_s]), torch.cat([s, s]), return_dict=False, **both.unet_kwargs())[0]
            out_c, out_u = out.chunk(2)
            out = out_u + scale * (out_c - out_u)
        else:
            out = models.teacher(x_s, s, return_dict=False, **cond.unet_kwargs())[0]
    return predict_x0(out.float(), x_s, alpha, sigma, prediction_type=models.schedule.prediction_type)


def _features(models: Models, x0: torch.Tensor, t_hat: torch.Tensor, eps: torch.Tensor, cond: Conditioning) -> Any:
    """The frozen teacher's features of `x0` re-noised to t̂ (gradients reach `x0` when it requires them)."""
    x_t = models.schedule.noise(x0, eps, t_hat)
    return models.features(x_t.to(models.teacher.dtype), t_hat, **cond.unet_kwargs())


def generator_step(
    models: Models, batch: Batch, config: ADDConfig
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The student's loss λ·L_distill + L_adv,G, and x̂θ (detached) for the discriminator's fake inputs."""
    schedule, x0 = models.schedule, batch.latents
    index = torch.randint(len(config.student_timesteps), (x0.shape[0],), generator=batch.generator)
    t = torch.tensor(config.student_timesteps)[index].to(x0.device)  # (B,)
    x_t = schedule.noise(x0, batch.randn(), t, zero_terminal=True)  # (B, 4, h, w)
    out = models.student(x_t, t, return_dict=False, **batch.cond.unet_kwargs())[0]
    alpha, sigma = schedule.alpha_sigma(t)
    student_x0 = predict_x0(out.float(), x_t, alpha, sigma, prediction_type=schedule.prediction_type)

    s = batch.randint(*config.teacher_timestep_range)
    x_s = schedule.noise(student_x0.detach(), batch.randn(), s)  # the student's sample, never the real one
    target = _teacher_x0(models, x_s.to(models.teacher.dtype), s, batch.cond, config.teacher_guidance_scale)
    distill = distillation_loss(student_x0, target, weight=schedule.alpha_sigma(s)[0])  # c(s) = α_s

    t_hat, eps = batch.randint(*config.disc_timestep_range), batch.randn()
    fake = _features(models, student_x0, t_hat, eps, batch.cond)
    adversarial = hinge_g_loss(models.heads(fake, batch.cond.pooled, t_hat))
    loss = config.distill_weight * distill + config.adversarial_weight * adversarial
    logs = {"loss_g": loss.item(), "loss_distill": distill.item(), "loss_adv_g": adversarial.item()}
    return loss, student_x0.detach(), logs


def discriminator_step(
    models: Models, batch: Batch, fake_x0: torch.Tensor, config: ADDConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinge loss on real vs student latents, both re-noised to the same t̂, plus (γ/2)·R1 on the real features."""
    t_hat, eps = batch.randint(*config.disc_timestep_range), batch.randn()
    cond = batch.cond
    with torch.no_grad():
        fake = _features(models, fake_x0, t_hat, eps, cond)
        real = _features(models, batch.latents, t_hat, eps, cond)
    real = [f.detach().requires_grad_() for f in real]  # R1 is a gradient wrt these inputs (not diffusers #6303's)
    real_scores = models.heads(real, cond.pooled, t_hat)
    fake_scores = models.heads(fake, cond.pooled, t_hat)
    hinge = hinge_d_loss(real_scores, fake_scores)
    r1 = r1_penalty(real_scores, real)
    loss = hinge + 0.5 * config.r1_gamma * r1
    logs = {"loss_d": loss.item(), "loss_d_hinge": hinge.item(), "r1": r1.item()}
    logs["d_real"] = torch.stack([s.mean() for s in real_scores]).mean().item()
    logs["d_fake"] = torch.stack([s.mean() for s in fake_scores]).mean().item()
    return loss, logs
