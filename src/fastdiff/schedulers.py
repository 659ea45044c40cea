"""Scheduler recipes: a name → a function that builds the diffusers scheduler a model card asks for.

Every recipe takes the pipeline repo's scheduler config and overrides only what the card overrides, exactly as
the card's `Scheduler.from_config(pipe.scheduler.config, ...)` line does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    LCMScheduler,
    TCDScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .errors import FastDiffError, did_you_mean

__all__ = ["RECIPES", "build_scheduler", "check_recipe", "img2img_schedule"]

SchedulerConfig = Mapping[str, Any]
Recipe = Callable[[SchedulerConfig, SchedulerMixin], SchedulerMixin]


def _from(cls: Any, config: SchedulerConfig, **overrides: Any) -> SchedulerMixin:
    """`cls.from_config(config, **overrides)`: the exact line model cards write."""
    scheduler: SchedulerMixin = cls.from_config(config, **overrides)
    return scheduler


def _repo(config: SchedulerConfig, current: SchedulerMixin) -> SchedulerMixin:
    """Keep the repo's own scheduler (SD 1.5's PNDM), as the card's plain `from_pretrained` does."""
    return current


def _euler_trailing(config: SchedulerConfig, current: SchedulerMixin) -> SchedulerMixin:
    """Euler with trailing spacing (Lin et al. 2023, "Common Diffusion Noise Schedules…", Sec. 3.3)."""
    return _from(EulerDiscreteScheduler, config, timestep_spacing="trailing")


def _euler_trailing_x0(config: SchedulerConfig, current: SchedulerMixin) -> SchedulerMixin:
    """Euler trailing for a model that predicts the clean sample (SDXL-Lightning 1-step, "x0")."""
    return _from(EulerDiscreteScheduler, config, timestep_spacing="trailing", prediction_type="sample")


def _euler_ancestral_trailing(config: SchedulerConfig, current: SchedulerMixin) -> SchedulerMixin:
    """Euler-ancestral with trailing spacing, as shipped by SDXL-Turbo (Sauer et al. 2023, ADD)."""
    return _from(EulerAncestralDiscreteScheduler, config, timestep_spacing="trailing")


def _ddim_trailing(config: SchedulerConfig, current: SchedulerMixin) -> SchedulerMixin:
    """DDIM with trailing spacing (Song et al. 2021), as Hyper-SD's N-step LoRAs ask."""
    return _from(DDIMScheduler, config, timestep_spacing="trailing")


def _lcm(config: SchedulerConfig, current: SchedulerMixin) -> SchedulerMixin:
    """Multi-step consistency sampling (Luo et al. 2023, Latent Consistency Models, Algorithm 3)."""
    return _from(LCMScheduler, config)


def _tcd(config: SchedulerConfig, current: SchedulerMixin) -> SchedulerMixin:
    """Trajectory consistency sampling with gamma=eta (Zheng et al. 2024, TCD, Sec. 4.2)."""
    return _from(TCDScheduler, config)


def _flow_euler_shift_3(config: SchedulerConfig, current: SchedulerMixin) -> SchedulerMixin:
    """Flow-matching Euler with mu = ln 3 at every resolution, i.e. the fixed shift 3 the Qwen-Image-Lightning LoRAs
    were distilled with (exponential time shift), and no terminal stretch: the card's `scheduler_config`."""
    return _from(
        FlowMatchEulerDiscreteScheduler, config, base_shift=math.log(3), max_shift=math.log(3), shift_terminal=None
    )


RECIPES: dict[str, Recipe] = {
    "repo": _repo,
    "euler-trailing": _euler_trailing,
    "euler-trailing-x0": _euler_trailing_x0,
    "euler-ancestral-trailing": _euler_ancestral_trailing,
    "ddim-trailing": _ddim_trailing,
    "lcm": _lcm,
    "tcd": _tcd,
    "flow-euler-shift-3": _flow_euler_shift_3,
}


def check_recipe(name: str) -> None:
    """Raise `FastDiffError` unless `name` is a known recipe."""
    if name not in RECIPES:
        raise FastDiffError(f"unknown scheduler recipe {name!r}" + did_you_mean(name, RECIPES))


def build_scheduler(name: str, current: SchedulerMixin) -> SchedulerMixin:
    """Build recipe `name` from the config of `current` (the scheduler the pipeline was loaded with)."""
    check_recipe(name)
    config: SchedulerConfig = current.config  # type: ignore[attr-defined]
    return RECIPES[name](config, current)


def img2img_schedule(
    steps: int, strength: float, timesteps: tuple[int, ...] | None
) -> tuple[int, float, tuple[int, ...] | None]:
    """Map (steps, strength) to the (num_inference_steps, strength, timesteps) to hand diffusers' img2img.

    Diffusers runs the last `int(steps * strength)` steps of a `steps`-step schedule and crashes when that is 0
    (diffusers #11092). When it would be 0, the schedule is lengthened to the shortest one, n = ceil(1/strength),
    for which diffusers runs one step: that step starts at timestep ≈ 1000/n, the grid point at or below
    `strength` (steps=1: strength 0.5-0.99 start at t=499, 0.34-0.49 at t=332, 0.25-0.33 at t=249). With explicit
    timesteps the one nearest to `strength` × 1000 is run alone, from itself (passed as strength 1).
    """
    if int(steps * strength) >= 1:
        return steps, strength, timesteps
    if timesteps is None:
        n = max(2, math.ceil(1 / strength - 1e-9))
        while int(n * strength) < 1:  # guard float rounding in 1 / strength
            n += 1
        return n, strength, None
    target = strength * 1000
    nearest = min(timesteps, key=lambda t: abs(t - target))
    return 1, 1.0, (nearest,)
