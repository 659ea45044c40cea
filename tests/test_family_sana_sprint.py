"""SANA-Sprint (0.6B and 1.6B) behind the same facade: the card's image for every allowed step count, img2img,
seeds and generators, batches, cached embeddings, embedded guidance, each bad input refused or warned with its fix,
and serving (the live session, `gen.map`, `fastdiff batch`; many threads: test_concurrency). Tiny random-weight
models from the test hub cache, under the real repo ids.

The pipeline bins every size to its ~1024² aspect-ratio bucket and resizes the image back, so even a 64² call
decodes a 1024² image: the tests keep their image counts low."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from diffusers import SanaSprintImg2ImgPipeline, SanaSprintPipeline
from PIL import Image

import fastdiff.loading
from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.adapters.sana_sprint import COMPLEX_HUMAN_INSTRUCTION
from fastdiff.cli import main
from fastdiff.hub import check_cached_or_reachable
from fastdiff.serving import LiveSession
from fastdiff.testing import cached_repo_path, tiny_gemma_tokenizer
from fastdiff.testing import tiny_sana_sprint_pipeline as tiny_pipeline

from .cards import card_pipeline, step_arguments
from .images import gradient
from .test_bulk import _wait_for_lines, assert_complete, batch_argv, run, write_txt

PROMPT = "a tiny astronaut hatching from an egg on the moon"
HEIGHT, WIDTH = 96, 128  # not square: the bin is 896x1152 and the image is resized and cropped back
SIZE = {"height": 64, "width": 64}


@pytest.fixture
def sprint(load: Any) -> FewStepGenerator:
    gen: FewStepGenerator = load("sana-sprint-0.6b")
    return gen


@cache
def _card(name: str, cache_dir: Path) -> Any:
    pipe, kwargs = card_pipeline(name, cache_dir)
    pipe.set_progress_bar_config(disable=True)
    assert kwargs == {}  # the card passes the prompt and the step count alone
    return pipe


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _close(a: Image.Image, b: Image.Image) -> bool:
    return bool(np.abs(_pixels(a) - _pixels(b)).max() <= 1)


def _own_warnings(call: Callable[[], Any]) -> tuple[Any, list[str]]:
    """`call()` and the FastDiffWarnings it gave."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in record if issubclass(w.category, FastDiffWarning)]


def test_tiny_sana_sprint_has_the_real_wiring_and_layout(hub_cache: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    pipe, again = tiny_pipeline(seed=1), tiny_pipeline(seed=1)
    assert torch.equal(torch.rand(1), expected)  # the caller's RNG is left alone
    assert torch.equal(pipe.transformer.patch_embed.proj.weight, again.transformer.patch_embed.proj.weight)
    assert pipe.vae_scale_factor == 32 and pipe.image_processor.config.vae_scale_factor == 32
    assert pipe.vae.config.latent_channels == pipe.transformer.config.in_channels == 32
    config = pipe.transformer.config
    assert config.guidance_embeds and config.sample_size == 32 and config.patch_size == 1
    assert config.caption_channels == pipe.text_encoder.config.hidden_size and not pipe.transformer.training
    assert type(pipe.text_encoder).__name__ == "Gemma2Model" and type(pipe.scheduler).__name__ == "SCMScheduler"
    gemma = tiny_gemma_tokenizer()
    assert (gemma.pad_token_id, gemma.eos_token_id, gemma.bos_token_id) == (0, 1, 2)
    assert gemma("a cat").input_ids[0] == gemma.bos_token_id
    for repo in (
        "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers",
        "Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers",
    ):
        snapshot = cached_repo_path(hub_cache, repo)
        index = json.loads((snapshot / "model_index.json").read_text())
        assert index["_class_name"] == "SanaSprintPipeline" and index["vae"] == ["diffusers", "AutoencoderDC"]
        scheduler = json.loads((snapshot / "scheduler" / "scheduler_config.json").read_text())
        assert (scheduler["prediction_type"], scheduler["sigma_data"]) == ("trigflow", 0.5)


@pytest.mark.parametrize("name", ["sana-sprint-0.6b", "sana-sprint-1.6b"])
@pytest.mark.parametrize("steps", [1, 2])
def test_sana_sprint_is_the_cards_image(name: str, steps: int, load: Any, hub_cache: Path) -> None:
    """The card: SanaSprintPipeline(prompt=..., num_inference_steps=N) with the pipeline's defaults (and
    intermediate_timesteps=None for 1 step, which the pipeline requires)."""
    expected = _card(name, hub_cache)(
        PROMPT,
        num_inference_steps=steps,
        height=HEIGHT,
        width=WIDTH,
        generator=torch.Generator("cpu").manual_seed(11),
        **step_arguments(name, steps),
    ).images[0]
    got = load(name)(PROMPT, steps=steps, seed=11, height=HEIGHT, width=WIDTH).images[0]
    assert got.size == (WIDTH, HEIGHT)
    assert _pixels(expected).std() > 5, "a flat reference would prove nothing"
    assert np.abs(_pixels(got) - _pixels(expected)).max() <= 1, f"{name}@{steps}"


def test_default_steps_guidance_and_scheduler_are_the_cards(sprint: FewStepGenerator) -> None:
    for name in ("sana-sprint-0.6b", "sana-sprint-1.6b"):
        preset = presets.get(name)
        assert (preset.default_steps, preset.steps, preset.guidance_scale) == (2, (1, 2), 4.5)
        assert (preset.height, preset.width, preset.max_sequence_length, preset.variant) == (1024, 1024, 300, None)
        assert preset.license == "other" and "check its card" in preset.description
    scheduler = sprint.pipeline.scheduler
    assert type(scheduler).__name__ == "SCMScheduler" and scheduler.config.sigma_data == 0.5
    assert sprint.dtype == torch.float32  # the CPU default: the torch engine in float32


def test_embedded_guidance_is_passed_through_with_no_negative_embeddings(
    sprint: FewStepGenerator, hub_cache: Path
) -> None:
    """guidance_scale feeds the transformer's guidance embedder: one pass per step, no CFG, no warning."""
    embeds = sprint.encode(PROMPT, "blurry", guidance=True)
    assert set(embeds) == {"prompt_embeds", "prompt_attention_mask"}
    assert embeds["prompt_embeds"].shape[1] == embeds["prompt_attention_mask"].shape[1] == 300
    expected = _card("sana-sprint-0.6b", hub_cache)(
        PROMPT, guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(2), **SIZE
    ).images[0]
    got, warned = _own_warnings(lambda: sprint(PROMPT, guidance_scale=7.0, seed=2, **SIZE))
    assert warned == []
    assert got.guidance_scale == 7.0 and _close(got.images[0], expected)
    assert not _close(got.images[0], sprint(PROMPT, seed=2, **SIZE).images[0])  # the scale does change the image


@pytest.mark.parametrize(("steps", "strength"), [(2, 0.6), (1, 0.5)])
def test_img2img_is_the_img2img_pipelines_image(
    steps: int, strength: float, sprint: FewStepGenerator, hub_cache: Path
) -> None:
    """SanaSprintImg2ImgPipeline over the card's modules at the input's own size (it would make 1024² without
    height/width), binned and resized back as text-to-image is."""
    card = SanaSprintImg2ImgPipeline(**_card("sana-sprint-0.6b", hub_cache).components)
    card.set_progress_bar_config(disable=True)
    init = gradient(HEIGHT, WIDTH)
    expected = card(
        PROMPT,
        image=init,
        strength=strength,
        num_inference_steps=steps,
        height=HEIGHT,
        width=WIDTH,
        generator=torch.Generator("cpu").manual_seed(3),
        **step_arguments("sana-sprint-0.6b", steps),
    ).images[0]
    got = sprint(PROMPT, image=init, strength=strength, steps=steps, seed=3).images[0]
    assert got.size == (WIDTH, HEIGHT)
    assert np.abs(_pixels(got) - _pixels(expected)).max() <= 1


def test_generator_is_seed_and_a_batch_is_each_image_alone(sprint: FewStepGenerator) -> None:
    alone = [_pixels(sprint(PROMPT, seed=s, **SIZE).images[0]) for s in (5, 6)]
    by_generator = sprint(PROMPT, generator=torch.Generator("cpu").manual_seed(5), **SIZE).images[0]
    assert np.array_equal(_pixels(by_generator), alone[0])
    batch = sprint(PROMPT, seed=5, num_images=2, **SIZE)
    assert batch.seeds == [5, 6]
    for got, expected in zip(batch.images, alone, strict=True):
        assert np.abs(_pixels(got) - expected).max() <= 1
    listed = sprint([PROMPT, "a red bicycle"], seed=5, **SIZE).images
    assert np.abs(_pixels(listed[0]) - alone[0]).max() <= 1
    assert _close(listed[1], sprint("a red bicycle", seed=6, **SIZE).images[0])


def test_prompt_embeddings_are_cached(sprint: FewStepGenerator) -> None:
    prompt = "a lighthouse at dusk, cached"
    first = sprint(prompt, seed=1, steps=1, **SIZE)
    hits = sprint.embedding_cache.hits
    again = sprint(prompt, seed=1, steps=1, **SIZE)
    assert sprint.embedding_cache.hits == hits + 1 and first.timings["encode"] > again.timings["encode"]
    assert np.array_equal(_pixels(first.images[0]), _pixels(again.images[0]))


def test_bad_inputs_name_the_fix(sprint: FewStepGenerator) -> None:
    with pytest.raises(FastDiffError, match=r"sana-sprint-0.6b runs 1-2 steps, got steps=4; use steps=2"):
        sprint(PROMPT, steps=4)
    with pytest.raises(FastDiffError, match=r"height=100 is not a multiple of 32 .*: use 96 or 128"):
        sprint(PROMPT, height=100, width=64)
    with pytest.warns(FastDiffWarning, match=r"negative_prompt is ignored .*runs no CFG for sana-sprint-0.6b"):
        sprint(PROMPT, negative_prompt="blurry", steps=1, **SIZE)
    # any size is generated at its ~1024² bin: no "trained at 1024x1024" warning
    assert _own_warnings(lambda: sprint(PROMPT, steps=1, **SIZE))[1] == []


def test_a_prompt_past_max_sequence_length_warns(sprint: FewStepGenerator) -> None:
    long = "word " * 60  # 300 Gemma tokens with the tiny tokenizer (a character or space each)
    with pytest.warns(FastDiffWarning, match=r"300 Gemma tokens; this model reads only the first 298"):
        sprint(long, steps=1, **SIZE)
    assert len(COMPLEX_HUMAN_INSTRUCTION) == 8  # the pipeline's own default instruction, prepended


def test_float16_is_refused_before_loading(hub_cache: Path, sprint: FewStepGenerator) -> None:
    with pytest.raises(FastDiffError, match=r"cannot run in float16: their Gemma-2 text encoder must stay in bfloat16"):
        FewStepGenerator.from_preset(
            "sana-sprint-0.6b", device="cpu", dtype="float16", cache_dir=hub_cache, local_files_only=True
        )
    with pytest.raises(FastDiffError, match=r"use bfloat16 \(dtype='bfloat16'"):
        FewStepGenerator.from_pipeline("sana-sprint-0.6b", tiny_pipeline().to(torch.float16))
    bf16 = FewStepGenerator.from_preset(
        "sana-sprint-0.6b", device="cpu", dtype="bfloat16", cache_dir=hub_cache, local_files_only=True
    )
    assert bf16.dtype == torch.bfloat16 and bf16.pipeline.text_encoder.dtype == torch.bfloat16


def test_weights_that_cannot_fit_are_refused_before_any_is_read(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("weights were read")

    monkeypatch.setattr(fastdiff.loading, "available_memory", lambda device: 1024)
    monkeypatch.setattr(SanaSprintPipeline, "from_pretrained", never)
    with pytest.raises(FastDiffError, match=r"sana-sprint-1.6b: its weights need about .* GiB in float32") as info:
        FewStepGenerator.from_preset("sana-sprint-1.6b", device="cpu", cache_dir=hub_cache, local_files_only=True)
    assert "dtype='bfloat16'" in str(info.value) and "float16" not in str(info.value).replace("bfloat16", "")


def test_max_level_keeps_the_dc_ae(sprint: FewStepGenerator) -> None:
    """No tiny autoencoder exists for DC-AE's latents: optimize="max" decodes with the model's own VAE."""
    gen = FewStepGenerator.from_pipeline("sana-sprint-0.6b", sprint.pipeline, optimize="max")
    assert type(gen.pipeline.vae).__name__ == "AutoencoderDC" and gen.recipe.engine == "torch"
    assert _close(gen(PROMPT, seed=1, steps=1, **SIZE).images[0], sprint(PROMPT, seed=1, steps=1, **SIZE).images[0])


def test_the_cuda_recipe_runs_on_cpu_tensors(sprint: FewStepGenerator) -> None:
    """The CUDA recipe's module changes on CPU tensors, over the family's own pipeline class: fused QKV where
    diffusers offers it (the transformer's method, which leaves SANA's attention as it is; DC-AE has none);
    torch.compile is left out (minutes on 2 cores)."""
    recipe = Optimizations.level("default", compile=False).recipe_for("cuda")
    assert recipe.fuse_qkv
    fused = FewStepGenerator.from_pipeline("sana-sprint-0.6b", sprint.pipeline, optimize=recipe)
    assert (
        type(fused.pipeline).__name__ == "SanaSprintPipeline"
        and fused.pipeline.transformer is not sprint.pipeline.transformer
    )
    size = {"steps": 2, "seed": 4, **SIZE}
    assert _close(fused(PROMPT, **size).images[0], sprint(PROMPT, **size).images[0])


def test_cached_sprint_needs_no_download_and_an_uncached_one_is_named(
    hub_cache: Path, tmp_path: Path, no_network: None
) -> None:
    sprint = presets.get("sana-sprint-1.6b")
    check_cached_or_reachable(sprint, dtypes=["float32"], cache_dir=hub_cache, local_files_only=True)  # no raise
    with pytest.raises(FastDiffError, match=r"Sana_Sprint_1\.6B_1024px_diffusers \(pipeline\)") as raised:
        check_cached_or_reachable(sprint, dtypes=["float32"], cache_dir=tmp_path / "empty", local_files_only=True)
    assert "unet/" not in str(raised.value) and "fastdiff download sana-sprint-1.6b" in str(raised.value)


def test_generate_and_download_commands(
    hub_cache: Path,
    tmp_path: Path,
    sprint: FewStepGenerator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`fastdiff generate` writes the call's image; `fastdiff download` lists the cached repo and no tiny VAE."""
    out = tmp_path / "fox.png"
    flags = ["--cache-dir", str(hub_cache), "--local-files-only", "--device", "cpu", "--optimize", "none"]
    argv = [
        "generate",
        PROMPT,
        "--preset",
        "sana-sprint-0.6b",
        *flags,
        "--seed",
        "3",
        "--height",
        "64",
        "--width",
        "64",
    ]
    assert main([*argv, "--output", str(out)]) == 0
    assert _close(Image.open(out).convert("RGB"), sprint(PROMPT, seed=3, **SIZE).images[0])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    assert main(["download", "sana-sprint-0.6b", "--dtype", "float32"]) == 0
    repo = "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers"
    assert capsys.readouterr().out.split() == [str(cached_repo_path(hub_cache, repo))]


def test_presets_table_lists_both_with_their_licence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("sana-sprint-0.6b", "sana-sprint-1.6b"):
        line = next(line for line in lines if line.startswith(f"{name} "))
        assert "sana-sprint" in line and "1-2" in line and "4.5" in line and "1024x1024" in line and "other" in line


# --- serving ------------------------------------------------------------------------------------------------------


def test_live_frames_are_the_plain_call(sprint: FewStepGenerator) -> None:
    gen = FewStepGenerator.from_pipeline("sana-sprint-0.6b", sprint.pipeline)
    sketch = gradient(64, 64)
    frames = []
    with LiveSession(gen, seed=11, steps=2, **SIZE) as live:
        for change in ({"prompt": "a red house"}, {"seed": 12, "steps": 1}, {"image": sketch, "strength": 0.5}):
            live.update(**change)
            frames.append(live.wait(timeout=60))
    red, seed, half = frames
    assert _close(red.image, gen("a red house", seed=11, steps=2, **SIZE).image)
    assert _close(seed.image, gen("a red house", seed=12, steps=1, **SIZE).image)
    assert _close(half.image, gen("a red house", seed=12, steps=1, image=sketch, strength=0.5).image)
    assert (seed.seed, seed.steps, seed.guidance_scale, half.strength) == (12, 1, 4.5, 0.5)


def test_map_gives_each_prompt_its_own_call(sprint: FewStepGenerator) -> None:
    prompts = [f"a paper boat, picture {i}" for i in range(3)]
    results = list(sprint.map(prompts, batch_size=2, progress=False, seed=100, steps=1, **SIZE))  # 2 + 1
    assert [r.seed for r in results] == [100, 101, 102]
    for prompt, result in zip(prompts, results, strict=True):
        assert _close(result.image, sprint(prompt, seed=result.seed, steps=1, **SIZE).image)


def test_fastdiff_batch_writes_the_direct_calls_images(
    tmp_path: Path, hub_cache: Path, sprint: FewStepGenerator, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_txt(tmp_path / "p.txt", ["a red fox", "a green frog"])
    out = tmp_path / "out"
    assert run(prompts, out, hub_cache, "--seed", "10", "--batch-size", "2", preset="sana-sprint-0.6b") == 0
    assert "made 2, skipped 0 (done before), failed 0" in capsys.readouterr().out
    for entry in assert_complete(out, 2):
        assert (entry["preset"], entry["steps"]) == ("sana-sprint-0.6b", 2)
        direct = sprint(entry["prompt"], seed=entry["seed"], **SIZE).images[0]
        assert _close(Image.open(out / entry["file"]).convert("RGB"), direct)


def test_fastdiff_batch_killed_mid_run_is_finished_by_a_rerun(
    tmp_path: Path, hub_cache: Path, sprint: FewStepGenerator
) -> None:
    count = 6
    prompts = write_txt(tmp_path / "p.txt", [f"prompt number {i}" for i in range(count)])
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "fastdiff.serving.bulk.cli",
        *batch_argv(prompts, out, hub_cache, preset="sana-sprint-0.6b"),
    ]
    with (tmp_path / "stderr.txt").open("wb") as err:
        child = subprocess.Popen([*argv, "--steps", "1"], stdout=subprocess.DEVNULL, stderr=err)
        written = _wait_for_lines(out / "manifest.jsonl", at_least=2, child=child)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert 2 <= written < count, (tmp_path / "stderr.txt").read_text()
    assert run(prompts, out, hub_cache, "--steps", "1", preset="sana-sprint-0.6b") == 0
    for entry in assert_complete(out, count):
        direct = sprint(entry["prompt"], seed=entry["seed"], steps=1, **SIZE).images[0]
        assert _close(Image.open(out / entry["file"]).convert("RGB"), direct)
