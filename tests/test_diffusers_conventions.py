"""diffusers' conventions in a call: generator=, callback_on_step_end, a list of prompts, array images, and
diffusers' argument names, each against plain diffusers on the same tiny modules or against fastdiff's own rules."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image
from PIL import Image

from fastdiff import FastDiffError, FewStepGenerator
from fastdiff.schedulers import img2img_schedule
from fastdiff.serving.coalesced import CoalescingGenerator
from fastdiff.testing.tiny import tiny_pipeline

# Tiny models run at 64 px; the size warning is about real checkpoints. diffusers' schedulers call np.array() on
# torch tensors, which numpy 2.4 flags with torch 2.13 (not ours to fix).
pytestmark = [
    pytest.mark.filterwarnings("ignore:.* was trained at:fastdiff.FastDiffWarning"),
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

SIZE = {"height": 64, "width": 64}
PROMPT = "a lighthouse on a cliff"


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.int16)


def equal(a: Image.Image, b: Image.Image) -> bool:
    return np.array_equal(pixels(a), pixels(b))


def close(a: Image.Image, b: Image.Image) -> bool:
    """Equal within 1/255: the same image made in another batch (batched kernels round differently)."""
    return int(np.abs(pixels(a) - pixels(b)).max()) <= 1


@pytest.fixture(scope="module")
def gen() -> FewStepGenerator:
    return FewStepGenerator.from_pipeline("sdxl-turbo", tiny_pipeline("sdxl"))


@pytest.fixture(scope="module")
def guided() -> FewStepGenerator:
    """A preset with classifier-free guidance (SD 1.5, guidance 7.5), where negative prompts count."""
    return FewStepGenerator.from_pipeline("sd15", tiny_pipeline("sd1"))


def diffusers_text2img(gen: FewStepGenerator, prompt: Any, **kwargs: Any) -> list[Image.Image]:
    """Plain diffusers' text-to-image on the generator's own modules and scheduler (at the preset's default steps
    unless `num_inference_steps` is given)."""
    pipe = AutoPipelineForText2Image.from_pipe(gen.pipeline)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"num_inference_steps": gen.preset.default_steps, "guidance_scale": gen.preset.guidance_scale} | kwargs
    return pipe(prompt, **SIZE, **kwargs).images  # type: ignore[no-any-return]


def diffusers_img2img(gen: FewStepGenerator, image: Any, *, steps: int, strength: float, **kwargs: Any) -> Any:
    """Plain diffusers' img2img, given the (steps, strength) that fastdiff maps to (pinned in test_img2img)."""
    pipe = AutoPipelineForImage2Image.from_pipe(gen.pipeline)
    pipe.set_progress_bar_config(disable=True)
    n, s, _ = img2img_schedule(steps, strength, None)
    return pipe(PROMPT, image=image, num_inference_steps=n, strength=s, guidance_scale=0.0, **kwargs).images


def unet_calls(gen: FewStepGenerator) -> tuple[list[int], Any]:
    calls: list[int] = []
    return calls, gen.pipeline.unet.register_forward_pre_hook(lambda *_: calls.append(1))


# --- generator= ---------------------------------------------------------------------------------------------


def test_a_fresh_cpu_generator_is_its_seed_and_diffusers_image(gen: FewStepGenerator) -> None:
    by_generator = gen(PROMPT, generator=seeded(7), steps=2, **SIZE)
    by_seed = gen(PROMPT, seed=7, steps=2, **SIZE)
    reference = diffusers_text2img(gen, PROMPT, num_inference_steps=2, generator=seeded(7))[0]
    assert equal(by_generator.image, by_seed.image)
    assert equal(by_generator.image, reference)  # optimize="none": bit for bit
    assert (by_generator.seed, by_generator.seeds) == (7, [7])
    assert not equal(by_generator.image, gen(PROMPT, seed=8, steps=2, **SIZE).image)


def test_a_list_of_generators_gives_one_per_image_as_diffusers(gen: FewStepGenerator) -> None:
    seeds = [4, 9, 2]
    result = gen(PROMPT, generator=[seeded(s) for s in seeds], num_images=3, **SIZE)
    reference = diffusers_text2img(gen, PROMPT, num_images_per_prompt=3, generator=[seeded(s) for s in seeds])
    assert all(equal(a, b) for a, b in zip(result.images, reference, strict=True))
    assert result.seeds == seeds and result.seed == 4
    for image, seed in zip(result.images, seeds, strict=True):
        assert close(image, gen(PROMPT, seed=seed, **SIZE).image)


def test_one_generator_serves_every_image_in_turn_and_advances_as_in_diffusers(gen: FewStepGenerator) -> None:
    mine, theirs = seeded(5), seeded(5)
    first = gen(PROMPT, generator=mine, num_images=2, **SIZE)
    reference = diffusers_text2img(gen, PROMPT, num_images_per_prompt=2, generator=theirs)
    assert all(equal(a, b) for a, b in zip(first.images, reference, strict=True))
    assert torch.equal(mine.get_state(), theirs.get_state())  # drawn from exactly as far as diffusers draws
    assert close(first.images[0], gen(PROMPT, seed=5, **SIZE).image)
    assert not close(first.images[1], gen(PROMPT, seed=6, **SIZE).image)  # not seed + i: one stream for both
    again = gen(PROMPT, generator=mine, **SIZE)  # the advanced generator: a new image, as in diffusers
    assert not close(again.image, first.images[0])
    assert first.seeds == [5, 5]


def test_generator_in_img2img_matches_diffusers(gen: FewStepGenerator) -> None:
    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    for generators in (seeded(3), [seeded(3), seeded(11)]):
        many = isinstance(generators, list)
        result = gen(PROMPT, image=init, strength=0.5, steps=2, generator=generators, num_images=2)
        reference = diffusers_img2img(
            gen,
            init,
            steps=2,
            strength=0.5,
            num_images_per_prompt=2,
            generator=[seeded(3), seeded(11)] if many else seeded(3),
        )
        assert all(equal(a, b) for a, b in zip(result.images, reference, strict=True)), many


# --- callback_on_step_end --------------------------------------------------------------------------------------


def test_callback_sees_every_step_with_diffusers_arguments(gen: FewStepGenerator) -> None:
    seen: list[tuple[int, float, tuple[str, ...], int]] = []

    def callback(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        assert pipe is gen.pipeline
        seen.append((step, float(timestep), tuple(sorted(callback_kwargs)), callback_kwargs["latents"].shape[0]))
        return callback_kwargs

    result = gen(
        PROMPT,
        steps=4,
        seed=1,
        num_images=2,
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
        **SIZE,
    )
    expected = list(gen.pipeline.scheduler.timesteps)  # the schedule of the call just made
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    assert [s[1] for s in seen] == [float(t) for t in expected]
    assert {s[2] for s in seen} == {("latents", "prompt_embeds")}
    assert {s[3] for s in seen} == {2}
    plain = gen(PROMPT, steps=4, seed=1, num_images=2, **SIZE)  # a callback that returns its input changes nothing
    assert all(close(a, b) for a, b in zip(result.images, plain.images, strict=True))


def test_callback_can_stop_a_call_as_in_diffusers(gen: FewStepGenerator) -> None:
    def stop_after_two(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        if step == 1:
            pipe._interrupt = True
        return callback_kwargs

    calls, handle = unet_calls(gen)
    try:
        stopped = gen(PROMPT, steps=4, seed=2, callback_on_step_end=stop_after_two, **SIZE)
    finally:
        handle.remove()
    assert len(calls) == 2  # steps 0 and 1 ran, 2 and 3 did not
    full = gen(PROMPT, steps=4, seed=2, **SIZE)
    reference = diffusers_text2img(
        gen, PROMPT, num_inference_steps=4, generator=seeded(2), callback_on_step_end=stop_after_two
    )
    assert equal(stopped.image, reference[0])
    assert not close(stopped.image, full.image)
    again = gen(PROMPT, steps=4, seed=2, **SIZE)  # the interrupt flag does not outlive its call
    assert equal(again.image, full.image)


def test_a_call_with_a_callback_runs_alone_beside_coalesced_calls(gen: FewStepGenerator) -> None:
    # Shares the modules; every batch waits up to 0.5 s to fill, so concurrent calls would be coalesced.
    waiting = CoalescingGenerator(gen.preset, gen.pipeline, max_batch=8, max_wait_ms=500)
    batch_sizes: list[int] = []

    def callback(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        batch_sizes.append(callback_kwargs["latents"].shape[0])
        return callback_kwargs

    others: list[Any] = []
    threads = [threading.Thread(target=lambda: others.append(waiting("other", seed=3, **SIZE))) for _ in range(2)]
    for t in threads:
        t.start()
    mine = waiting(PROMPT, seed=4, callback_on_step_end=callback, **SIZE)
    for t in threads:
        t.join()
    assert batch_sizes == [1]
    assert close(mine.image, gen(PROMPT, seed=4, **SIZE).image)
    assert len(others) == 2 and all(close(o.image, gen("other", seed=3, **SIZE).image) for o in others)


# --- a list of prompts ------------------------------------------------------------------------------------------


def test_a_list_of_prompts_numbers_its_images_in_prompt_order(gen: FewStepGenerator) -> None:
    prompts = ["a red barn", "a blue boat"]
    result = gen(prompts, seed=10, num_images=2, steps=2, **SIZE)
    assert result.seeds == [10, 11, 12, 13] and len(result.images) == 4
    for k, image in enumerate(result.images):
        assert close(image, gen(prompts[k // 2], seed=10 + k, steps=2, **SIZE).image), k
    reference = diffusers_text2img(
        gen, prompts, num_images_per_prompt=2, num_inference_steps=2, generator=[seeded(10 + k) for k in range(4)]
    )
    assert all(close(a, b) for a, b in zip(result.images, reference, strict=True))
    assert not close(result.images[0], result.images[2])


def test_a_list_of_prompts_takes_one_negative_prompt_or_one_each(guided: FewStepGenerator) -> None:
    prompts, negatives = ["a red barn", "a blue boat"], ["blurry", "dark"]
    each = guided(prompts, negative_prompt=negatives, seed=0, steps=1, **SIZE)
    one = guided(prompts, negative_prompt="blurry", seed=0, steps=1, **SIZE)
    for k in range(2):
        assert close(each.images[k], guided(prompts[k], negative_prompt=negatives[k], seed=k, steps=1, **SIZE).image)
        assert close(one.images[k], guided(prompts[k], negative_prompt="blurry", seed=k, steps=1, **SIZE).image)
    assert close(each.images[0], one.images[0]) and not close(each.images[1], one.images[1])


# --- numpy arrays and tensors as img2img input --------------------------------------------------------------------


def test_array_images_give_the_pil_image_and_diffusers_image(gen: FewStepGenerator) -> None:
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    hwc = np.asarray(photo).astype(np.float32) / 255  # what diffusers' image processor makes of a PIL image
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    expected = gen(PROMPT, image=photo, strength=0.5, steps=2, seed=6).image
    for array in (hwc, hwc[None], chw, chw[None], hwc.astype(np.float64)):
        got = gen(PROMPT, image=array, strength=0.5, steps=2, seed=6).image
        # A tensor takes diffusers' tensor branch of the image processor, which rounds in another order: on some
        # CPUs (an AMD EPYC, family 25) a few pixels end 1/255 apart, the parity tolerance.
        assert (equal if isinstance(array, np.ndarray) else close)(got, expected), (type(array), array.shape)
    reference = diffusers_img2img(gen, hwc, steps=2, strength=0.5, generator=seeded(6))[0]
    assert equal(expected, reference)


# --- messages that teach ------------------------------------------------------------------------------------------

BAD_CALLS: list[tuple[dict[str, Any], str]] = [
    ({"output_type": "np"}, "results are PIL images"),
    ({"return_dict": False}, "always returns a GenerationResult"),
    ({"prompt_embeds": torch.zeros(1, 77, 32)}, "gen.encode(prompt)"),
    ({"negative_prompt_embeds": torch.zeros(1, 77, 32)}, "pass the text as prompt="),
    ({"latents": torch.zeros(1, 4, 8, 8)}, "seed= or generator="),
    ({"eta": 1.0}, "preset.eta"),
    ({"timesteps": [999]}, "preset.timesteps"),
    ({"prompt_2": "a dog"}, "both SDXL text encoders"),
    ({"callback": print}, "callback_on_step_end=f"),
    ({"cross_attention_kwargs": {"scale": 0.5}}, "gen.pipeline(...)"),
    ({"step": 2}, "did you mean 'steps'?"),
    ({"steps": 8}, "runs 1-4 steps, got steps=8; use steps=4"),  # the nearest allowed count, not the default
    ({"num_inference_steps": 0}, "got steps=0; use steps=1"),
    ({"steps": 2, "num_inference_steps": 2}, "pass one (steps= is fastdiff's)"),
    ({"num_images": 2, "num_images_per_prompt": 2}, "pass one (num_images= is fastdiff's)"),
    ({"seed": 1, "generator": seeded(1)}, "pass seed= or generator=, not both"),
    ({"generator": [seeded(1), seeded(2)]}, "2 generators for 1 image: pass one per image"),
    ({"generator": 7}, "torch.Generator or a list of them"),
    ({"callback_on_step_end": "stop"}, "must be callable"),
    ({"callback_on_step_end_tensor_inputs": ["latents"]}, "needs callback_on_step_end="),
    ({"callback_on_step_end": print, "callback_on_step_end_tensor_inputs": ["noise"]}, "not ['noise']"),
    ({"prompt": []}, "empty list"),
    ({"prompt": ["a", "b"], "negative_prompt": ["x"]}, "1 entries for 2 prompts"),
    ({"negative_prompt": ["x", "y"]}, "for one prompt"),
    ({"prompt": ["a"] * 3, "num_images": 30}, "use gen.map(prompts)"),
    ({"image": np.zeros((64, 64, 3), np.uint8)}, "pass image / 255"),
    ({"image": torch.full((3, 64, 64), -0.5)}, "(image + 1) / 2"),
    ({"image": np.full((64, 64, 3), 200.0)}, "image / 255"),
    ({"image": np.zeros((2, 64, 64, 3), np.float32)}, "one RGB image laid out HWC"),
    ({"image": torch.zeros(4, 64, 64)}, "one RGB image laid out CHW"),
    ({"image": np.zeros((64, 64, 3), np.float32), "height": 128}, "resize the array first"),
]


def _call_id(kwargs: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        if isinstance(value, (np.ndarray, torch.Tensor)):
            return f"<{type(value).__name__} {tuple(value.shape)} {value.dtype}>"
        if isinstance(value, torch.Generator) or callable(value):
            return f"<{type(value).__name__}>"
        if isinstance(value, list):
            return f"[{','.join(show(v) for v in value)}]"
        return str(value)[:40]

    return ",".join(f"{k}={show(v)}" for k, v in kwargs.items())


@pytest.mark.parametrize(("kwargs", "hint"), BAD_CALLS, ids=[_call_id(k) for k, _ in BAD_CALLS])
def test_a_diffusers_habit_gets_fastdiffs_way(kwargs: dict[str, Any], hint: str, gen: FewStepGenerator) -> None:
    arguments = {"prompt": "a cat", **SIZE, **kwargs}
    calls, handle = unet_calls(gen)
    try:
        with pytest.raises(FastDiffError) as info:
            gen(arguments.pop("prompt"), **arguments)
    finally:
        handle.remove()
    assert hint in str(info.value)
    assert calls == [], "refused only after running the UNet: a bad call must be refused before any work"


def test_diffusers_renames_are_fastdiffs_arguments(gen: FewStepGenerator) -> None:
    renamed = gen(PROMPT, num_inference_steps=2, num_images_per_prompt=2, seed=3, **SIZE)
    own = gen(PROMPT, steps=2, num_images=2, seed=3, **SIZE)
    assert renamed.steps == 2 and len(renamed.images) == 2
    assert all(equal(a, b) for a, b in zip(renamed.images, own.images, strict=True))


def test_map_names_fastdiffs_argument_for_a_diffusers_one(gen: FewStepGenerator) -> None:
    with pytest.raises(FastDiffError, match=r"diffusers' num_inference_steps= is steps= in fastdiff"):
        list(gen.map(["a"], progress=False, num_inference_steps=2))
