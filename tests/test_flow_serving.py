"""Serving a flow-matching transformer (tiny FLUX.1-schnell): the live session and `gen.map` give the plain call's
image for the same state. Tests parametrized over a UNet family and FLUX cover the rest: the live session's interrupt
and embedding cache (test_realtime), `fastdiff batch` with a kill and resume (test_bulk), 8 threads × 20 calls on one
generator (test_concurrency)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from fastdiff import FewStepGenerator
from fastdiff.serving import LiveSession

from .test_realtime import same

SIZE = {"height": 64, "width": 64}  # a multiple of 16 (VAE 8 × patch 2)


@pytest.fixture
def flux(load: Any, small_sizes: None) -> FewStepGenerator:
    """A generator of its own (own embedding cache counters) over the session's tiny FLUX modules."""
    return FewStepGenerator.from_pipeline("flux-schnell", load("flux-schnell").pipeline)


def _close(a: Image.Image, b: Image.Image) -> bool:
    return bool(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1)


def _sketch() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def test_live_frames_are_the_plain_call_for_every_kind_of_state(flux: FewStepGenerator) -> None:
    changes: list[dict[str, Any]] = [
        {"prompt": "a red house"},
        {"seed": 12},
        {"steps": 4},
        {"image": _sketch(), "strength": 0.5},
        {"image": None},  # back to text-to-image
    ]
    frames = []
    with LiveSession(flux, seed=11, steps=2, **SIZE) as live:
        for change in changes:
            live.update(**change)
            frames.append(live.wait(timeout=30))
    red, seed, steps, half, text = frames
    assert same(red.image, flux("a red house", seed=11, steps=2, **SIZE).image)
    assert same(seed.image, flux("a red house", seed=12, steps=2, **SIZE).image)
    assert same(steps.image, flux("a red house", seed=12, steps=4, **SIZE).image)
    assert same(half.image, flux("a red house", seed=12, steps=4, image=_sketch(), strength=0.5).image)
    assert same(text.image, steps.image) and not same(half.image, text.image)
    assert (steps.seed, steps.steps, steps.guidance_scale, half.strength) == (12, 4, 0.0, 0.5)
    assert set(red.timings) >= {"encode", "denoise", "decode", "total", "queued", "latency"}


def test_map_gives_each_prompt_its_own_call(flux: FewStepGenerator) -> None:
    prompts = [f"a paper boat, picture {i}" for i in range(5)]
    results = list(flux.map(prompts, batch_size=2, progress=False, seed=100, steps=2, **SIZE))  # 2 + 2 + 1
    assert [r.seed for r in results] == [100, 101, 102, 103, 104]
    for prompt, result in zip(prompts, results, strict=True):
        assert _close(result.image, flux(prompt, seed=result.seed, steps=2, **SIZE).image)  # batched: within 1/255
    chosen = list(flux.map(iter(prompts[:2]), seeds=[7, 3], batch_size=2, progress=False, steps=1, **SIZE))
    assert [r.seed for r in chosen] == [7, 3]
    assert _close(chosen[1].image, flux(prompts[1], seed=3, steps=1, **SIZE).image)
