"""img2img at 1 and 2 steps: strength picks a valid starting timestep, and steps × strength < 1 never crashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fastdiff import presets
from fastdiff.schedulers import img2img_schedule

from .cards import card_pipeline

PROMPT = "a cat wizard, detailed"


def _photo(size: int) -> Image.Image:
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    rgb = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 90)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def _unet_timesteps(gen: Any) -> tuple[list[float], Any]:
    seen: list[float] = []

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        seen.append(float(torch.as_tensor(t).flatten()[0]))

    return seen, gen.pipeline.unet.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize(
    ("steps", "strength", "expected"),
    [(1, 0.5, (2, 0.5, None)), (2, 0.5, (2, 0.5, None)), (1, 0.3, (4, 0.3, None)), (4, 0.2, (5, 0.2, None))],
)
def test_schedule_mapping(steps: int, strength: float, expected: tuple[Any, ...]) -> None:
    n, s, t = img2img_schedule(steps, strength, None)
    assert (n, s, t) == expected
    assert int(n * s) >= 1


def test_schedule_mapping_with_explicit_timesteps() -> None:
    assert img2img_schedule(4, 0.5, (999, 749, 499, 249)) == (4, 0.5, (999, 749, 499, 249))
    assert img2img_schedule(4, 0.2, (999, 749, 499, 249)) == (1, 1.0, (249,))
    assert img2img_schedule(1, 0.5, (399,)) == (1, 1.0, (399,))


FAMILIES = [
    "sdxl-turbo",
    "sd-turbo",
    "sdxl-lightning-1step",
    "sdxl-lightning-2step",
    "dmd2-sdxl-1step",
    "hyper-sdxl-1step-lora",
    "lcm-lora-sd15",
    "sd15",
]


def _diffusers_img2img(gen: Any, image: Image.Image, *, steps: int, strength: float, seed: int) -> np.ndarray:
    """Plain diffusers' img2img on the generator's own modules and scheduler, given the (steps, strength,
    timesteps) that `img2img_schedule` maps to (that mapping is pinned by the tests above)."""
    from diffusers import AutoPipelineForImage2Image

    preset = gen.preset
    pipe = AutoPipelineForImage2Image.from_pipe(gen.pipeline)
    pipe.set_progress_bar_config(disable=True)
    n, s, timesteps = img2img_schedule(steps, strength, preset.timesteps)
    extra: dict[str, Any] = {"timesteps": list(timesteps)} if timesteps is not None else {}
    if preset.eta is not None:
        extra["eta"] = preset.eta
    out = pipe(
        PROMPT,
        image=image,
        num_inference_steps=n,
        strength=s,
        guidance_scale=preset.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(seed),
        **extra,
    ).images[0]
    return np.asarray(out, np.int16)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("strength", [0.25, 0.5, 1.0])
def test_img2img_runs_at_one_and_two_steps(name: str, strength: float, load: Any) -> None:
    gen = load(name)
    preset = presets.get(name)
    if preset.timesteps is not None and min(abs(t / 1000 - strength) for t in preset.timesteps) > 0.15:
        pytest.skip(f"{name} starts only at its timesteps {preset.timesteps}: strength {strength} is refused")
    steps = [n for n in (1, 2) if n in preset.steps] or [preset.default_steps]
    size = 128
    for n in steps:
        seen, handle = _unet_timesteps(gen)
        try:
            result = gen(PROMPT, image=_photo(size), strength=strength, steps=n, seed=1)
        finally:
            handle.remove()
        assert result.images[0].size == (size, size)
        reference = _diffusers_img2img(gen, _photo(size), steps=n, strength=strength, seed=1)
        assert np.abs(np.asarray(result.images[0], np.int16) - reference).max() <= 1  # plain diffusers' image
        expected = max(1, int(n * strength)) if preset.timesteps is None else 1
        # CFG batches both halves into one UNet call; PNDM (SD 1.5's own scheduler) adds one warm-up call.
        assert len(seen) - expected in ((0, 1) if preset.scheduler == "repo" else (0,))


def test_one_step_half_strength_starts_at_the_middle(load: Any) -> None:
    gen = load("sdxl-turbo")
    seen, handle = _unet_timesteps(gen)
    try:
        gen(PROMPT, image=_photo(128), strength=0.5, steps=1, seed=0)
    finally:
        handle.remove()
    assert seen == [499.0]  # trailing 2-step schedule is [999, 499]: one step from half noise


@pytest.mark.parametrize(("steps", "card_steps"), [(2, 2), (1, 2)])
def test_turbo_img2img_matches_card(steps: int, card_steps: int, load: Any, hub_cache: Path) -> None:
    """The SDXL-Turbo card: AutoPipelineForImage2Image, num_inference_steps=2, strength=0.5, guidance 0."""
    from diffusers import AutoPipelineForImage2Image

    text2img, _ = card_pipeline("sdxl-turbo", hub_cache)
    card = AutoPipelineForImage2Image.from_pipe(text2img)
    card.set_progress_bar_config(disable=True)
    init = _photo(128)
    expected = card(
        PROMPT,
        image=init,
        num_inference_steps=card_steps,
        strength=0.5,
        guidance_scale=0.0,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    got = load("sdxl-turbo")(PROMPT, image=init, strength=0.5, steps=steps, seed=3).images[0]
    assert np.abs(np.asarray(got, np.int16) - np.asarray(expected, np.int16)).max() <= 1


def test_explicit_size_resizes_the_input(load: Any, small_sizes: None) -> None:
    result = load("sdxl-turbo")(PROMPT, image=_photo(96), strength=0.5, height=256, width=192)
    assert result.images[0].size == (192, 256)
