"""Same image as diffusers: fastdiff vs each model card's own snippet, per preset and allowed step count."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fastdiff import presets

from .cards import card_pipeline, step_arguments

PROMPT = "a golden retriever in autumn leaves"
SHAPES_PROMPT = "a small red circle in the top left on a blue background"  # the shipped models' grammar


def prompt_for(name: str) -> str:
    return SHAPES_PROMPT if name.startswith("fastdiff-shapes") else PROMPT


# Presets trained at 1024² run here at 256²: the parity question does not depend on size, the test time does.
SIZE = {64: 64, 512: 512, 1024: 256}
# SD 1.5 allows 1-150 steps (the shipped teacher 1-50); these cover 1 step, PNDM's warm-up (≤ 3 steps) and the
# 20-step baseline.
WIDE_STEPS = {"sd15": (1, 3, 20), "fastdiff-shapes-teacher": (1, 3, 20)}


def cases() -> list[tuple[str, int]]:
    out = []
    for p in presets.all_presets():
        steps = WIDE_STEPS.get(p.name, p.steps)
        out.extend((p.name, n) for n in steps)
    return out


@cache
def _card(name: str, cache_dir: Path) -> tuple[Any, dict[str, Any]]:
    pipe, kwargs = card_pipeline(name, cache_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe, kwargs


def card_image(name: str, cache_dir: Path, *, steps: int, seed: int, size: int) -> np.ndarray:
    pipe, kwargs = _card(name, cache_dir)
    image = pipe(
        prompt=prompt_for(name),  # by name: FLUX.2 [klein]'s first parameter is its reference image
        num_inference_steps=steps,
        height=size,
        width=size,
        generator=torch.Generator("cpu").manual_seed(seed),
        **kwargs,
        **step_arguments(name, steps),
    ).images[0]
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize(("name", "steps"), cases())
def test_same_image_as_model_card(name: str, steps: int, load: Any, hub_cache: Path, small_sizes: None) -> None:
    preset = presets.get(name)
    size = SIZE[preset.height]
    result = load(name)(prompt_for(name), steps=steps, seed=7, height=size, width=size)
    expected = card_image(name, hub_cache, steps=steps, seed=7, size=size)
    got = np.asarray(result.images[0], dtype=np.int16)
    assert got.shape == expected.shape == (size, size, 3)
    assert expected.std() > 5, "the reference image is flat: the comparison would prove nothing"
    assert np.abs(got - expected).max() <= 1, f"{name}@{steps} differs from the card's diffusers output"


@pytest.mark.parametrize("name", ["sdxl-turbo", "sd-turbo", "sdxl-lightning-4step", "lcm-lora-sd15"])
def test_batch_image_i_is_seed_plus_i(name: str, load: Any, small_sizes: None) -> None:
    gen = load(name)
    size = SIZE[presets.get(name).height]
    batch = gen(PROMPT, seed=100, num_images=3, height=size, width=size)
    assert batch.seeds == [100, 101, 102]
    for i, image in enumerate(batch.images):
        alone = gen(PROMPT, seed=100 + i, height=size, width=size).images[0]
        assert np.abs(np.asarray(image, np.int16) - np.asarray(alone, np.int16)).max() <= 1
    assert np.abs(np.asarray(batch.images[0], np.int16) - np.asarray(batch.images[1], np.int16)).max() > 10


def test_seed_none_is_chosen_and_reported(load: Any) -> None:
    gen = load("sdxl-turbo")
    result = gen(PROMPT)
    again = gen(PROMPT, seed=result.seed)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(again.images[0]))
    assert result.steps == 1 and result.preset == "sdxl-turbo"


def _sleep_before(module: torch.nn.Module, seconds: float) -> Any:
    return module.register_forward_pre_hook(lambda *_: time.sleep(seconds))


def test_timings_charge_each_stage_its_own_time(load: Any, small_sizes: None) -> None:
    """Each stage's module made slow by a known amount: the time shows up in that stage and no other."""
    gen = load("sdxl-turbo")
    pipe = gen.pipeline
    # Any two sleeps differ by more than the margin (and a tiny 128² run by less): a misplaced clock read shows.
    slow, margin = {"encode": 0.3, "denoise": 0.4, "decode": 0.5}, 0.25
    hooks = [
        _sleep_before(pipe.text_encoder, slow["encode"] / 2),
        _sleep_before(pipe.text_encoder_2, slow["encode"] / 2),
        _sleep_before(pipe.unet, slow["denoise"]),
        _sleep_before(pipe.vae.decoder, slow["decode"]),
    ]
    try:
        miss = gen("a prompt only this test uses", seed=0, height=128, width=128).timings
        hit = gen("a prompt only this test uses", seed=1, height=128, width=128).timings  # a cache hit: no encoder
    finally:
        for hook in hooks:
            hook.remove()
    for timings in (miss, hit):
        assert set(timings) == {"encode", "denoise", "decode", "total"}
        stages = timings["encode"] + timings["denoise"] + timings["decode"]
        assert stages == pytest.approx(timings["total"], rel=0.01)
    for stage in ("denoise", "decode"):
        for timings in (miss, hit):
            assert slow[stage] <= timings[stage] < slow[stage] + margin, (stage, timings)
    assert slow["encode"] <= miss["encode"] < slow["encode"] + margin, miss
    assert hit["encode"] < 0.05, hit
