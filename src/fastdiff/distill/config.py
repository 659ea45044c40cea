"""The hyper-parameters of one ADD run, with the paper's values where it gives them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import FastDiffError

__all__ = ["ADDConfig"]


def _flag(default: Any, kind: type, text: str) -> Any:
    """A field that `fastdiff distill` also takes as a `--flag` of type `kind`, with `text` as its help."""
    return field(default=default, metadata={"type": kind, "help": text})


@dataclass(frozen=True)
class ADDConfig:
    """One Adversarial Diffusion Distillation run (Sauer et al. 2023); see docs/distill.md for each choice."""

    max_steps: int = _flag(1000, int, "max steps")
    max_seconds: float | None = _flag(None, float, "stop after this many seconds of training")
    batch_size: int = _flag(8, int, "batch size per process; the hinge loss degenerates at 1")
    learning_rate: float = _flag(1e-5, float, "student learning rate (Adam)")
    disc_learning_rate: float = _flag(1e-4, float, "discriminator heads' learning rate (Adam, β1 = 0)")
    warmup_steps: int = _flag(0, int, "linear LR warm-up steps of both optimizers")
    distill_weight: float = _flag(2.5, float, "λ, weight of the distillation loss (0: adversarial only)")
    adversarial_weight: float = _flag(1.0, float, "weight of the adversarial loss (0: distillation only)")
    r1_gamma: float = _flag(1e-5, float, "γ of the R1 penalty on the real inputs of the heads")
    student_timesteps: tuple[int, ...] = (999, 749, 499, 249)  # trailing 4-step set, 999 at zero SNR
    teacher_timestep_range: tuple[int, int] = (20, 980)  # s ~ U, the teacher's re-noising level
    disc_timestep_range: tuple[int, int] = (0, 750)  # t̂ ~ U, the discriminator's re-noising level (LADD/AMD)
    teacher_guidance_scale: float = _flag(1.0, float, "CFG scale of the teacher's target; 1 is one plain call")
    teacher_target_steps: int = _flag(1, int, "DDIM steps of the teacher's target from the re-noised output (1: ADD)")
    # "teacher": its one-step x̂0 at the re-noised student output (ADD); "trajectory": the end of the teacher's
    # sampling path that the student's input lies on (needs `train(trajectories=...)`)
    distill_target: str = "teacher"
    # what the student's output is read as: None keeps the teacher's parametrisation (ADD); "sample" makes it x̂0 at
    # every timestep (as SDXL-Lightning's 1-step UNet), which cannot blow up the 1/α of an ε-student at t = 999
    student_prediction: str | None = _flag(None, str, "'sample': the student outputs x̂0 (default: as the teacher)")
    disc_layers: tuple[int, ...] | None = None  # teacher down blocks (0..n-1) and mid block (n); None: all
    disc_hidden: int = 64  # channels of each discriminator head
    ema_decay: float = _flag(0.999, float, "EMA decay of the student")
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "no", "fp16" or "bf16" (accelerate's names); frozen models are cast to it
    seed: int = _flag(0, int, "seed of the data set, the heads and every noise draw")
    checkpoint_every: int = _flag(0, int, "checkpoint every N steps (0: only at the end)")
    sample_every: int = _flag(0, int, "write a 1-step grid of `sample_prompts` every N steps (0: never)")
    sample_prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1:
            raise FastDiffError("max_steps and batch_size must be ≥ 1")
        if self.teacher_target_steps < 1:
            raise FastDiffError(f"teacher_target_steps must be ≥ 1, not {self.teacher_target_steps}")
        if not self.student_timesteps or not all(0 <= t < 1000 for t in self.student_timesteps):
            raise FastDiffError(f"student_timesteps must lie in [0, 999], not {self.student_timesteps}")
        for name in ("teacher_timestep_range", "disc_timestep_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi < 1000:
                raise FastDiffError(f"{name} must be (lo, hi) with 0 ≤ lo ≤ hi ≤ 999, not {(lo, hi)}")
        if self.distill_target not in ("teacher", "trajectory"):
            raise FastDiffError(f"distill_target must be 'teacher' or 'trajectory', not {self.distill_target!r}")
        if self.student_prediction not in (None, "sample"):
            raise FastDiffError(f"student_prediction must be None or 'sample', not {self.student_prediction!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise FastDiffError(f"mixed_precision must be 'no', 'fp16' or 'bf16', not {self.mixed_precision!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise FastDiffError(f"ema_decay must be in [0, 1), not {self.ema_decay}")
