"""Each preset runs the scheduler its model card asks for (docs: /work/shared/FAMILIES.md): class, spacing,
prediction type, and the timesteps the UNet actually sees at every allowed step count, written out by hand."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

from fastdiff import presets
from fastdiff.families import family

TRAILING = {  # diffusers' trailing spacing: round(1000 - 1000·i/n) - 1, as the Turbo/Lightning/Hyper cards use
    1: [999],
    2: [999, 499],
    3: [999, 666, 332],
    4: [999, 749, 499, 249],
    8: [999, 874, 749, 624, 499, 374, 249, 124],
}
LCM = {  # LCMScheduler: n of the 50 "original" steps 999, 979, …, 19, evenly skipped (4: the LCM paper's)
    4: [999, 759, 499, 259],
    5: [999, 799, 599, 399, 199],
    6: [999, 839, 679, 499, 339, 179],
    7: [999, 859, 719, 579, 439, 299, 159],
    8: [999, 879, 759, 639, 499, 379, 259, 139],
}
# FLUX.1-schnell's FlowMatchEuler, shift 1.0 and no dynamic shifting: sigmas linspace(1, 1/n, n), timestep = 1000σ.
FLOW = {1: [1000], 2: [1000, 500], 3: [1000, 667, 333], 4: [1000, 750, 500, 250]}
# Qwen-Image-Lightning's card: mu = ln 3 at every size with the exponential time shift, a fixed shift of 3 on
# linspace(1, 1/n, n): σ' = 3σ / (1 + 2σ), and no terminal stretch.
FLOW_SHIFT_3 = {4: [1000, 900, 750, 500], 8: [1000, 955, 900, 833, 750, 643, 500, 300]}
# Z-Image-Turbo's FlowMatchEuler, shift 3.0: sigmas linspace(1, 1/8, 8) shifted to 3σ/(1 + 2σ) = 1, 0.9545, 0.9,
# 0.8333, 0.75, 0.6429, 0.5, 0.3; its transformer sees 1 - σ (time running 0 → 1), here × 1000.
Z_IMAGE = [0, 45, 100, 167, 250, 357, 500, 700]
# SD 3.5 Large Turbo's FlowMatchEuler, shift 3.0: σ' = 3σ / (1 + 2σ) of σ = linspace(1, 0.003, n) (0.003: the
# training schedule's smallest σ), timestep = 1000σ' (SD3's transformer takes it so).
SD3_FLOW = {4: [1000, 858, 602, 9]}
# SANA-Sprint's SCM (TrigFlow) from max_timesteps π/2, through the pipeline's intermediate 1.3 at 2 steps only; the
# transformer sees sin t / (sin t + cos t) of each.
SCM = {1: [1000], 2: [1000, 783]}
# SD 1.5's PNDM, leading spacing with steps_offset 1 and skip_prk_steps: N steps are N + 1 UNet calls, the
# second timestep repeated (PLMS's warm-up).
PNDM = {1: [1], 3: [667, 334, 334, 1], 20: [951, 901, *range(901, 0, -50)]}

# preset → (scheduler class, timestep_spacing or None where the class has none, prediction type, timesteps by steps)
EXPECTED: dict[str, tuple[str, str | None, str, dict[int, list[int]]]] = {
    "sd15": ("PNDMScheduler", "leading", "epsilon", PNDM),
    "sd-turbo": ("EulerDiscreteScheduler", "trailing", "epsilon", {n: TRAILING[n] for n in (1, 2, 3, 4)}),
    "sdxl-turbo": ("EulerAncestralDiscreteScheduler", "trailing", "epsilon", {n: TRAILING[n] for n in (1, 2, 3, 4)}),
    "sdxl-lightning-1step": ("EulerDiscreteScheduler", "trailing", "sample", {1: TRAILING[1]}),  # the x0 UNet
    **{
        f"sdxl-lightning-{n}step{kind}": ("EulerDiscreteScheduler", "trailing", "epsilon", {n: TRAILING[n]})
        for n in (2, 4, 8)
        for kind in ("", "-lora")
    },
    "lcm-lora-sd15": ("LCMScheduler", None, "epsilon", LCM),
    "lcm-lora-sdxl": ("LCMScheduler", None, "epsilon", LCM),
    "hyper-sdxl-1step-lora": ("TCDScheduler", None, "epsilon", {1: [999]}),
    **{f"hyper-sdxl-{n}step-lora": ("DDIMScheduler", "trailing", "epsilon", {n: TRAILING[n]}) for n in (2, 4, 8)},
    "dmd2-sdxl-1step": ("LCMScheduler", None, "epsilon", {1: [399]}),  # the card's explicit timesteps
    "dmd2-sdxl-4step": ("LCMScheduler", None, "epsilon", {4: [999, 749, 499, 249]}),
    # flow matching: the scheduler has no prediction type (the transformer predicts the velocity)
    "flux-schnell": ("FlowMatchEulerDiscreteScheduler", None, "flow", FLOW),
    # FLUX.2 [klein]: the pipeline's own sigmas linspace(1, 1/4, 4), shifted by its empirical mu (1.945 for the 16
    # image tokens of 64², 4 steps) with dynamic shifting, exp(mu) / (exp(mu) + 1/σ - 1); the tiny repo's scheduler
    # config is inferred (testing/tiny_flux2.py)
    "flux2-klein-4b": ("FlowMatchEulerDiscreteScheduler", None, "flow", {4: [1000, 955, 875, 700]}),
    "z-image-turbo": ("FlowMatchEulerDiscreteScheduler", None, "flow", {8: Z_IMAGE}),
    "sd35-large-turbo": ("FlowMatchEulerDiscreteScheduler", None, "flow", SD3_FLOW),
    **{
        f"qwen-image-lightning-{n}step": ("FlowMatchEulerDiscreteScheduler", None, "flow", {n: FLOW_SHIFT_3[n]})
        for n in (4, 8)
    },
    "sana-sprint-0.6b": ("SCMScheduler", None, "trigflow", SCM),
    "sana-sprint-1.6b": ("SCMScheduler", None, "trigflow", SCM),
    # The shipped toy models: the teacher with SD 1.5's own scheduler config, the student as SD-Turbo.
    "fastdiff-shapes-teacher": ("PNDMScheduler", "leading", "epsilon", PNDM),
    "fastdiff-shapes": ("EulerDiscreteScheduler", "trailing", "sample", {n: TRAILING[n] for n in (1, 2, 3, 4)}),
}
# Presets allowing many step counts (SD 1.5's 1-150): only these counts are written out.
WIDE = {"sd15", "fastdiff-shapes-teacher"}
# The eta each scheduler step gets: TCD's gamma 1.0 from Hyper-SD's card for its 1-step LoRA; DDIM the pipeline's
# default 0.0 (deterministic), as the card leaves it; None where the step takes no eta.
ETA = {"hyper-sdxl-1step-lora": 1.0, **{f"hyper-sdxl-{n}step-lora": 0.0 for n in (2, 4, 8)}}
# The FLUX pipelines hand their transformer timestep / 1000, ZImagePipeline 1 - timestep / 1000, SanaSprintPipeline
# a value in [0, 1]; the tables above are in the scheduler's units (SANA-Sprint's: thousandths).
TIMESTEP_UNIT = {
    "flux-schnell": 1000,
    "flux2-klein-4b": 1000,
    "z-image-turbo": 1000,
    "qwen-image-lightning-4step": 1000,
    "qwen-image-lightning-8step": 1000,
    "sana-sprint-0.6b": 1000,
    "sana-sprint-1.6b": 1000,
}


def test_every_preset_has_an_expected_schedule() -> None:
    assert set(EXPECTED) == set(presets.names())
    for name, (_, _, _, by_steps) in EXPECTED.items():
        preset = presets.get(name)
        assert set(by_steps) <= set(preset.steps)
        assert name in WIDE or set(by_steps) == set(preset.steps), name  # every allowed count


def _run(gen: Any, steps: int) -> tuple[list[int], list[Any]]:
    """Generate once at 64²; the timestep of every UNet call and the `eta` of every scheduler step."""
    timesteps: list[int] = []
    etas: list[Any] = []

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        timesteps.append(round(float(torch.as_tensor(t).flatten()[0]) * TIMESTEP_UNIT.get(gen.preset.name, 1)))

    scheduler = gen.pipeline.scheduler
    step = scheduler.step

    @functools.wraps(step)  # keeps the signature: diffusers passes eta only to a step that takes it
    def recording_step(*args: Any, **kwargs: Any) -> Any:
        etas.append(kwargs.get("eta"))
        return step(*args, **kwargs)

    denoiser = getattr(gen.pipeline, family(gen.preset.family).denoiser)
    handle = denoiser.register_forward_pre_hook(hook, with_kwargs=True)
    scheduler.step = recording_step
    try:
        prompt = "a red circle on a blue background" if gen.preset.name.startswith("fastdiff-") else "a lighthouse"
        gen(prompt, steps=steps, seed=0, height=64, width=64)
    finally:
        handle.remove()
        del scheduler.step
    return timesteps, etas


@pytest.mark.parametrize("name", list(EXPECTED))
def test_scheduler_and_timesteps_follow_the_card(name: str, load: Any, small_sizes: None) -> None:
    cls, spacing, prediction, by_steps = EXPECTED[name]
    gen = load(name)
    scheduler = gen.pipeline.scheduler
    assert type(scheduler).__name__ == cls
    assert scheduler.config.get("prediction_type", "flow") == prediction
    if spacing is not None:
        assert scheduler.config.timestep_spacing == spacing
    for steps, expected in by_steps.items():
        timesteps, etas = _run(gen, steps)
        assert timesteps == expected, f"{name}@{steps}"
        assert set(etas) == {ETA.get(name)}, f"{name}@{steps}: eta {etas}"
