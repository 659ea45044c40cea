"""The hyper-parameters of one ADD run, with the paper's values where it gives them."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FastDiffError

__all__ = ["ADDConfig"]


@dataclass(frozen=True)
class ADDConfig:
    """One Adversarial Diffusion Distillation run (Sauer et al. 2023); see docs/distill.md for each choice."""

    max_steps: int = 1000
    max_seconds: float | None = None  # stop earlier once this much training time has passed
    batch_size: int = 8  # per process; the hinge loss degenerates at 1
    learning_rate: float = 1e-5  # student (Adam)
    disc_learning_rate: float = 1e-4  # discriminator heads (Adam, β1 = 0 as in diffusers' ADD PR)
    warmup_steps: int = 0  # linear LR warm-up of both optimizers
    distill_weight: float = 2.5  # λ of the paper; 0 gives the adversarial-only ablation
    adversarial_weight: float = 1.0  # 0 gives the distillation-only ablation
    r1_gamma: float = 1e-5  # R1 on the real inputs of the heads (the teacher features)
    student_timesteps: tuple[int, ...] = (999, 749, 499, 249)  # trailing 4-step set, 999 at zero SNR
    teacher_timestep_range: tuple[int, int] = (20, 980)  # s ~ U, the teacher's re-noising level
    disc_timestep_range: tuple[int, int] = (0, 750)  # t̂ ~ U, the discriminator's re-noising level (LADD/AMD)
    teacher_guidance_scale: float = 1.0  # CFG of the distillation target; 1 is one plain teacher call
    disc_layers: tuple[int, ...] | None = None  # teacher down blocks (0..n-1) and mid block (n); None: all
    disc_hidden: int = 64  # channels of each discriminator head
    ema_decay: float = 0.999
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "no", "fp16" or "bf16" (accelerate's names); frozen models are cast to it
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end
    sample_every: int = 0  # 0: never; else a 1-step grid of `sample_prompts` every N steps
    sample_prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1:
            raise FastDiffError("max_steps and batch_size must be ≥ 1")
        if not self.student_timesteps or not all(0 <= t < 1000 for t in self.student_timesteps):
            raise FastDiffError(f"student_timesteps must lie in [0, 999], not {self.student_timesteps}")
        for name in ("teacher_timestep_range", "disc_timestep_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi < 1000:
                raise FastDiffError(f"{name} must be (lo, hi) with 0 ≤ lo ≤ hi ≤ 999, not {(lo, hi)}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise FastDiffError(f"mixed_precision must be 'no', 'fp16' or 'bf16', not {self.mixed_precision!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise FastDiffError(f"ema_decay must be in [0, 1), not {self.ema_decay}")
