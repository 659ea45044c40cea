"""LiveSession: newest-state-only generation on a tiny random SDXL model (no weights, a few seconds on a CPU); the
tests marked `each_family` run on a tiny FLUX.1-schnell too."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fastdiff import FastDiffError, FewStepGenerator
from fastdiff.serving import Frame, LiveSession
from fastdiff.testing import tiny_flux_pipeline
from fastdiff.testing.tiny import tiny_pipeline

# Tiny models run at 64-128 px to keep the suite fast; the size warning is about real checkpoints. The filter is
# process-wide, so it also covers the session's worker thread.
# diffusers' schedulers call np.array() on torch tensors, which numpy 2.4 flags with torch 2.13 (not ours to fix).
pytestmark = [
    pytest.mark.filterwarnings("ignore:.* was trained at:fastdiff.FastDiffWarning"),
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

SIZE = {"height": 64, "width": 64}
PROMPT = "a watercolor painting of a lighthouse on a cliff at dawn, soft morning light"  # 76 characters


@pytest.fixture(scope="module")
def generator() -> FewStepGenerator:
    return FewStepGenerator.from_pipeline("sdxl-turbo", tiny_pipeline("sdxl"))  # one torch thread: see conftest


@pytest.fixture(scope="module")
def flux_generator() -> FewStepGenerator:
    return FewStepGenerator.from_pipeline("flux-schnell", tiny_flux_pipeline())


@pytest.fixture(params=["sdxl-turbo", "flux-schnell"])
def each_family(request: pytest.FixtureRequest, generator: FewStepGenerator) -> FewStepGenerator:
    """The tiny SDXL generator, then a tiny FLUX one (a UNet family and a flow-matching transformer)."""
    if request.param == "sdxl-turbo":
        return generator
    flux: FewStepGenerator = request.getfixturevalue("flux_generator")
    return flux


class Gated(FewStepGenerator):
    """Shares `generator`'s pipeline; each call first waits for `gate` (a test decides when a generation runs)."""

    def __init__(self, generator: FewStepGenerator, *, fail: BaseException | None = None) -> None:
        super().__init__(generator.preset, generator.pipeline)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.prompts: list[str] = []
        self.fail = fail

    def __call__(self, prompt: str, **kwargs: Any) -> Any:
        self.prompts.append(prompt)
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        if self.fail is not None:
            raise self.fail
        return super().__call__(prompt, **kwargs)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def same(a: Image.Image, b: Image.Image) -> bool:
    return np.array_equal(pixels(a), pixels(b))


def live_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fastdiff-live"]


def test_typing_burst_generates_far_fewer_frames_than_keys_and_ends_on_the_direct_image(
    generator: FewStepGenerator,
) -> None:
    size = {"height": 256, "width": 256}  # ≥ 40 ms a generation even on a fast CPU: slower than the keys
    totals: list[float] = []
    with LiveSession(generator, steps=1, seed=7, on_frame=lambda f: totals.append(f.timings["total"]), **size) as live:
        first_key = time.perf_counter()
        for end in range(1, len(PROMPT) + 1):  # one update per key at ~100 keys/s
            live.update(prompt=PROMPT[:end])
            time.sleep(0.01)
        last_key = time.perf_counter()
        frame = live.wait(timeout=30)
        lag = time.perf_counter() - last_key
        stats = live.stats
    direct = generator(PROMPT, steps=1, seed=7, **size)
    slowest, fastest = max(totals), min(totals)
    spread = f"{fastest * 1000:.0f}-{slowest * 1000:.0f} ms"
    print(f"\nburst: {stats}; last key → frame {lag * 1000:.0f} ms; generations {spread}")
    assert stats.received == len(PROMPT)
    assert stats.generated < stats.received / 2 and stats.dropped > stats.received / 2
    assert stats.generated <= (last_key - first_key + lag) / fastest + 1  # back to back at most, never more
    assert stats.received == stats.generated + stats.dropped + stats.failed + stats.interrupted
    # No backlog: the final state waits for the one generation in flight at most, then takes one of its own.
    assert frame.timings["queued"] < slowest + 0.1
    assert lag < 2 * slowest + 0.2
    assert stats.latency_p50 is not None and stats.latency_p95 is not None
    assert stats.latency_p50 <= stats.latency_p95 < 2 * slowest + 0.2
    assert frame.prompt == PROMPT and frame.seed == 7 and frame.steps == 1
    assert same(frame.image, direct.image)


def test_stale_states_are_dropped_not_queued(generator: FewStepGenerator) -> None:
    gated = Gated(generator)
    with LiveSession(gated, **SIZE) as live:
        live.update(prompt="a")
        assert gated.entered.wait(10)  # "a" is being generated; the next three arrive meanwhile
        for prompt in ("ab", "abc", "abcd"):
            live.update(prompt=prompt)
        gated.gate.set()
        frame = live.wait(timeout=10)
        stats = live.stats
    assert gated.prompts == ["a", "abcd"]
    assert frame.prompt == "abcd" and frame.version == 4
    assert (stats.received, stats.generated, stats.dropped, stats.interrupted) == (4, 2, 2, 0)


def test_update_never_blocks_while_generating(generator: FewStepGenerator) -> None:
    gated = Gated(generator)
    with LiveSession(gated, **SIZE) as live:
        live.update(prompt="first")
        assert gated.entered.wait(10)
        start = time.perf_counter()
        for i in range(200):
            live.update(prompt=f"p{i}")
        assert time.perf_counter() - start < 0.5  # the worker is stuck in a generation: update must not wait
        assert live.latest() is None
        gated.gate.set()
        assert live.wait(timeout=10).prompt == "p199"


def test_embedding_cache_hits_when_only_the_seed_changes(each_family: FewStepGenerator) -> None:
    cache = each_family.embedding_cache
    with LiveSession(each_family, steps=1, **SIZE) as live:
        live.update(prompt="cache me")
        live.wait(timeout=10)
        hits, misses = cache.hits, cache.misses
        for seed in (1, 2, 3):
            live.update(seed=seed)
            assert live.wait(timeout=10).seed == seed
    assert (cache.hits - hits, cache.misses - misses) == (3, 0)


def test_noise_is_fixed_per_seed_and_size_so_a_prompt_change_evolves_one_picture(
    generator: FewStepGenerator,
) -> None:
    first_inputs: list[torch.Tensor] = []

    def capture(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        first_inputs.append(args[0].clone())  # the scaled initial latents (B, 4, H/8, W/8) of a 1-step run

    handle = generator.pipeline.unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with LiveSession(generator, seed=5, **SIZE) as live:
            for change in ({"prompt": "a cat"}, {"prompt": "a cat in a hat"}, {"seed": 6}):
                live.update(**change)
                live.wait(timeout=10)
    finally:
        handle.remove()
    cat, cat_in_hat, other_seed = first_inputs
    assert torch.equal(cat, cat_in_hat)
    assert not torch.equal(cat, other_seed)


def test_frames_are_the_direct_call_for_every_kind_of_state(generator: FewStepGenerator) -> None:
    with LiveSession(generator, seed=11, steps=2, **SIZE) as live:
        live.update(prompt="a red house", guidance_scale=0.0)
        frame = live.wait(timeout=10)
    direct = generator("a red house", seed=11, steps=2, guidance_scale=0.0, **SIZE)
    assert same(frame.image, direct.image)
    assert (frame.seed, frame.steps, frame.guidance_scale) == (11, 2, 0.0)
    assert set(frame.timings) >= {"encode", "denoise", "decode", "total", "queued", "latency"}


def test_img2img_live_mode_uses_the_core_strength_mapping(generator: FewStepGenerator) -> None:
    sketch = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with LiveSession(generator, steps=2, seed=3) as live:
        live.update(prompt="a boat", image=sketch, strength=0.5)
        half = live.wait(timeout=10)
        live.update(strength=1.0)
        full = live.wait(timeout=10)
        live.update(image=None)  # back to text-to-image: the strength slider keeps its value, unused
        text = live.wait(timeout=10)
    assert same(half.image, generator("a boat", steps=2, seed=3, image=sketch, strength=0.5).image)
    assert same(full.image, generator("a boat", steps=2, seed=3, image=sketch, strength=1.0).image)
    assert not same(half.image, full.image)
    assert half.strength == 0.5 and half.image.size == sketch.size
    assert text.strength is None
    assert same(text.image, generator("a boat", steps=2, seed=3).image)


def test_a_bad_state_surfaces_on_wait_and_the_session_keeps_running(generator: FewStepGenerator) -> None:
    errors: list[FastDiffError] = []
    with LiveSession(generator, on_error=errors.append, **SIZE) as live:
        live.update(prompt="ok")
        good = live.wait(timeout=10)
        live.update(steps=9)  # sdxl-turbo runs 1-4 steps
        with pytest.raises(FastDiffError, match="steps=9"):
            live.wait(timeout=10)
        with pytest.raises(FastDiffError, match="steps=9"):  # every wait for that state says so
            live.wait(timeout=10)
        assert live.error is not None and live.latest() is good
        live.update(steps=1)
        assert live.wait(timeout=10).steps == 1
        assert live.error is None
        stats = live.stats
    assert len(errors) == 1 and stats.failed == 1 and stats.generated == 2


def test_an_unexpected_exception_becomes_a_fastdifferror_with_its_cause(generator: FewStepGenerator) -> None:
    gated = Gated(generator, fail=RuntimeError("out of memory"))
    gated.gate.set()
    with LiveSession(gated, **SIZE) as live:
        live.update(prompt="boom")
        with pytest.raises(FastDiffError, match="RuntimeError: out of memory") as info:
            live.wait(timeout=10)
        assert isinstance(info.value.__cause__, RuntimeError)
        gated.fail = None
        live.update(prompt="fine")
        assert live.wait(timeout=10).prompt == "fine"


def test_frames_iterator_raises_a_failed_state_and_can_be_resumed(generator: FewStepGenerator) -> None:
    with LiveSession(generator, **SIZE) as live:
        live.update(prompt="one")
        frames = live.frames(timeout=10)
        assert next(frames).prompt == "one"
        live.update(steps=0)
        with pytest.raises(FastDiffError, match="steps=0"):
            next(frames)
        live.update(steps=1, prompt="two")
        assert next(live.frames(timeout=10)).prompt == "two"


def test_async_stream_yields_frames_and_ends_on_close(generator: FewStepGenerator) -> None:
    async def main() -> list[str]:
        seen: list[str] = []
        with LiveSession(generator, **SIZE) as live:
            live.update(prompt="alpha")
            async for frame in live.stream(timeout=10):
                seen.append(frame.prompt)
                if frame.prompt == "alpha":
                    live.update(prompt="beta")
                else:
                    break
        return seen

    assert asyncio.run(main()) == ["alpha", "beta"]


def test_a_broken_callback_is_logged_and_does_not_stop_the_session(
    generator: FewStepGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(frame: Frame) -> None:
        raise ValueError("callback bug")

    with (
        caplog.at_level(logging.ERROR, logger="fastdiff.serving.live"),
        LiveSession(generator, on_frame=broken, **SIZE) as live,
    ):
        live.update(prompt="x")
        live.wait(timeout=10)
        live.update(prompt="y")
        assert live.wait(timeout=10).prompt == "y"
    assert "callback raised" in caplog.text


def test_interrupt_cuts_a_superseded_generation_at_a_step_boundary(each_family: FewStepGenerator) -> None:
    gated = Gated(each_family)
    with LiveSession(gated, interrupt=True, steps=4, seed=2, **SIZE) as live:
        live.update(prompt="old")
        assert gated.entered.wait(10)
        live.update(prompt="new")  # pending before "old" reaches its first denoiser step
        gated.gate.set()
        frame = live.wait(timeout=10)
        stats = live.stats
    assert (stats.interrupted, stats.generated, stats.dropped) == (1, 1, 0)
    # The abandoned run leaves no scheduler state behind: the next frame is still the direct call's image.
    assert same(frame.image, each_family("new", steps=4, seed=2, **SIZE).image)


def test_clean_shutdown_leaves_no_thread_and_no_hook(generator: FewStepGenerator) -> None:
    gated = Gated(generator)
    hooks = len(generator.pipeline.unet._forward_pre_hooks)
    with LiveSession(gated, **SIZE) as live:
        assert live_threads()
        live.update(prompt="slow")
        assert gated.entered.wait(10)
        threading.Timer(0.2, gated.gate.set).start()  # still in flight when the block ends: cut at its first step
    assert not live_threads()
    assert live.stats.interrupted == 1
    assert len(generator.pipeline.unet._forward_pre_hooks) == hooks
    assert live.closed
    with pytest.raises(FastDiffError, match="closed"):
        live.update(prompt="late")


def test_wait_without_a_prompt_or_past_its_timeout(generator: FewStepGenerator) -> None:
    gated = Gated(generator)
    with LiveSession(gated, **SIZE) as live:
        live.update(seed=4)  # no prompt yet: nothing is generated
        with pytest.raises(FastDiffError, match=r"update\(prompt=...\)"):
            live.wait()
        live.update(prompt="stuck")
        with pytest.raises(TimeoutError):
            live.wait(timeout=0.05)
        gated.gate.set()
        assert live.wait(timeout=10).seed == 4


def test_a_name_that_is_not_a_state_field_is_refused(generator: FewStepGenerator) -> None:
    with pytest.raises(TypeError, match="stepz"):
        LiveSession(generator, stepz=1)
    with LiveSession(generator, **SIZE) as live:
        with pytest.raises(TypeError, match="stepz"):
            live.update(prompt="a cat", stepz=1)
        assert live.state.prompt is None and live.stats.received == 0  # the refused update changed nothing
