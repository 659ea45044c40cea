"""Z-Image-Turbo behind the same facade: the card's image, img2img, seeds and generators, batches of variable-length
prompt embeddings, cached embeddings, each bad input refused or warned with its fix (float16 above all), and
serving (the live session, `gen.map`, `fastdiff batch`, threads). Tiny random-weight models from the test hub
cache, under the real repo id."""

from __future__ import annotations

import json
import threading
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import fastdiff.loading
from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.cli import main
from fastdiff.families import family
from fastdiff.hub import check_cached_or_reachable
from fastdiff.memory import check_fits
from fastdiff.serving import LiveSession
from fastdiff.testing import cached_repo_path, save_tiny_pipeline, tiny_lora, tiny_pipeline
from fastdiff.testing.tiny_flux2 import tiny_qwen_tokenizer

from .cards import card_pipeline, with_lora
from .images import gradient
from .test_bulk import assert_complete, pixels, run, write_txt

PROMPT = "a golden retriever in autumn leaves"
HEIGHT, WIDTH = 128, 192  # not square, multiples of 16 (VAE 8 × patch 2)
SMALL = {"height": 64, "width": 64}


@pytest.fixture
def zimage(load: Any, small_sizes: None) -> FewStepGenerator:
    gen: FewStepGenerator = load("z-image-turbo")
    return gen


@cache
def _card(cache_dir: Path) -> Any:
    pipe, kwargs = card_pipeline("z-image-turbo", cache_dir)
    pipe.set_progress_bar_config(disable=True)
    assert kwargs == {"guidance_scale": 0.0}
    return pipe


def _close(a: Image.Image, b: Image.Image) -> bool:
    return bool(np.abs(pixels(a) - pixels(b)).max() <= 1)


def test_tiny_zimage_has_the_real_wiring_and_layout(hub_cache: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    pipe, again = tiny_pipeline("zimage", seed=1), tiny_pipeline("zimage", seed=1)
    assert torch.equal(torch.rand(1), expected)  # the caller's RNG is left alone
    assert torch.equal(pipe.transformer.cap_embedder[1].weight, again.transformer.cap_embedder[1].weight)
    assert pipe.vae_scale_factor == 8 and pipe.image_processor.config.vae_scale_factor == 16
    assert pipe.vae.config.latent_channels == pipe.transformer.config.in_channels == 16
    assert pipe.transformer.config.cap_feat_dim == pipe.text_encoder.config.hidden_size
    assert list(pipe.transformer.config.axes_lens) == [1536, 512, 512]  # the repo's, not the class default
    assert type(pipe.text_encoder).__name__ == "Qwen3Model" and not pipe.transformer.training
    tokenizer = tiny_qwen_tokenizer()
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "a cat"}], tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    assert chat == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n" and tokenizer.padding_side == "right"
    snapshot = cached_repo_path(hub_cache, "Tongyi-MAI/Z-Image-Turbo")
    index = json.loads((snapshot / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "Qwen3Model"] and index["tokenizer"][1] == "Qwen2Tokenizer"
    scheduler = json.loads((snapshot / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["shift"], scheduler["use_dynamic_shifting"]) == (3.0, False)


@pytest.mark.parametrize("steps", presets.get("z-image-turbo").steps)
def test_z_image_turbo_is_the_cards_image(steps: int, zimage: FewStepGenerator, hub_cache: Path) -> None:
    """The card: ZImagePipeline(prompt, num_inference_steps=8, guidance_scale=0.0, generator=...manual_seed(s))."""
    expected = _card(hub_cache)(
        PROMPT,
        num_inference_steps=steps,
        guidance_scale=0.0,
        height=HEIGHT,
        width=WIDTH,
        generator=torch.Generator("cpu").manual_seed(11),
    ).images[0]
    got = zimage(PROMPT, steps=steps, seed=11, height=HEIGHT, width=WIDTH).images[0]
    assert got.size == (WIDTH, HEIGHT)
    assert pixels(expected).std() > 5, "a flat reference would prove nothing"
    assert np.abs(pixels(got) - pixels(expected)).max() <= 1, f"z-image-turbo@{steps}"


def test_default_steps_size_and_schedule_are_the_cards(zimage: FewStepGenerator) -> None:
    """8 transformer passes at the sigmas the card's num_inference_steps=9 gave on diffusers < 0.39 (the 9th at
    sigma 0 did nothing): 8 on diffusers ≥ 0.39, and 9 is refused."""
    preset = zimage.preset
    assert (preset.default_steps, preset.steps, preset.guidance_scale) == (8, (8,), 0.0)
    assert (preset.height, preset.width, preset.max_sequence_length, preset.license) == (1024, 1024, 512, "apache-2.0")
    scheduler = zimage.pipeline.scheduler
    assert scheduler.config.shift == 3.0 and not scheduler.config.use_dynamic_shifting  # the repo's, as is
    zimage(PROMPT, seed=0, **SMALL)
    sigmas = [round(float(s), 4) for s in scheduler.sigmas]
    assert sigmas == [1.0, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3, 0.0]
    with pytest.raises(FastDiffError, match=r"z-image-turbo runs exactly 8 steps .*got steps=9; use steps=8"):
        zimage(PROMPT, steps=9)


@pytest.mark.parametrize("strength", [0.6, 0.3])
def test_img2img_is_the_img2img_pipelines_image(strength: float, zimage: FewStepGenerator, hub_cache: Path) -> None:
    """ZImageImg2ImgPipeline over the card's modules, at the input's own size."""
    from diffusers import ZImageImg2ImgPipeline

    card = ZImageImg2ImgPipeline.from_pipe(_card(hub_cache))
    card.set_progress_bar_config(disable=True)
    init = gradient(HEIGHT, WIDTH)
    expected = card(
        PROMPT,
        image=init,
        strength=strength,
        num_inference_steps=8,
        guidance_scale=0.0,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    got = zimage(PROMPT, image=init, strength=strength, seed=3).images[0]
    assert got.size == (WIDTH, HEIGHT)
    assert np.abs(pixels(got) - pixels(expected)).max() <= 1


def test_generator_is_seed_and_a_batch_is_each_image_alone(zimage: FewStepGenerator) -> None:
    """Prompts of different lengths in one call: the pipeline takes one embedding tensor per image."""
    short, long = "a cat", "a lighthouse on a cliff over a stormy sea at dusk"
    alone = {(p, s): zimage(p, seed=s, **SMALL).images[0] for p in (short, long) for s in (5, 6, 7, 8)}
    by_generator = zimage(short, generator=torch.Generator("cpu").manual_seed(5), **SMALL).images[0]
    assert pixels(by_generator).tolist() == pixels(alone[short, 5]).tolist()
    batch = zimage([short, long], seed=5, num_images=2, **SMALL)
    assert batch.seeds == [5, 6, 7, 8]
    for got, key in zip(batch.images, [(short, 5), (short, 6), (long, 7), (long, 8)], strict=True):
        assert _close(got, alone[key])
    generators = [torch.Generator("cpu").manual_seed(s) for s in (6, 5)]
    listed = zimage(short, generator=generators, num_images=2, **SMALL).images
    assert _close(listed[0], alone[short, 6]) and _close(listed[1], alone[short, 5])


def test_prompt_embeddings_are_cached_as_the_pipeline_passes_them(zimage: FewStepGenerator) -> None:
    prompt = "a lighthouse at dusk, cached"
    first = zimage(prompt, seed=1, **SMALL)
    hits = zimage.embedding_cache.hits
    again = zimage(prompt, seed=1, **SMALL)
    assert zimage.embedding_cache.hits == hits + 1
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    embeds = zimage.encode(prompt)
    assert set(embeds) == {"prompt_embeds"}  # no negatives at guidance 0
    (embedding,) = embeds["prompt_embeds"]  # a list: the prompt's templated tokens, padding dropped
    chat = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    assert embedding.shape == (len(zimage.pipeline.tokenizer(chat).input_ids), 32)


def test_guidance_above_zero_runs_cfg_as_diffusers_and_warns(zimage: FewStepGenerator, hub_cache: Path) -> None:
    """ZImagePipeline runs CFG for any guidance_scale > 0 (not > 1): twice the transformer work; warned with the
    fix, and still diffusers' image, negative prompt included."""
    with pytest.warns(
        FastDiffWarning,
        match=r"guidance_scale=0.5 runs classifier-free guidance: twice the .*Use guidance_scale=0.0",
    ):
        got = zimage(PROMPT, guidance_scale=0.5, negative_prompt="blurry", seed=2, **SMALL).images[0]
    expected = _card(hub_cache)(
        PROMPT,
        negative_prompt="blurry",
        num_inference_steps=8,
        guidance_scale=0.5,
        generator=torch.Generator("cpu").manual_seed(2),
        **SMALL,
    ).images[0]
    assert np.abs(pixels(got) - pixels(expected)).max() <= 1
    assert set(zimage.encode(PROMPT, "blurry", guidance=True)) == {"prompt_embeds", "negative_prompt_embeds"}
    with pytest.warns(FastDiffWarning, match=r"negative_prompt is ignored at guidance_scale=0.0 \(diffusers only "):
        zimage(PROMPT, negative_prompt="blurry", seed=2, **SMALL)


def test_bad_inputs_name_the_fix(zimage: FewStepGenerator) -> None:
    with pytest.raises(FastDiffError, match=r"height=264 is not a multiple of 16 .*: use 256 or 272"):
        zimage(PROMPT, height=264, width=256)
    with pytest.raises(FastDiffError, match=r"width=200 is not a multiple of 16"):
        zimage(PROMPT, height=256, width=200)
    long = "word " * 110  # 550 tokens with the template: one token per byte with the tiny tokenizer
    with pytest.warns(
        FastDiffWarning, match=r"Qwen3 tokens with its chat template; this model reads only the first 512"
    ):
        zimage(long, **SMALL)


def test_float16_is_refused_naming_bfloat16(zimage: FewStepGenerator, hub_cache: Path) -> None:
    """fp16 gives NaN (black) images with Z-Image: refused however it is asked for, before loading anything."""
    load = {"device": "cpu", "cache_dir": hub_cache, "local_files_only": True}
    fix = r"zimage models cannot run in float16: .*NaN \(black\) images.*use bfloat16 \(dtype='bfloat16'"
    with pytest.raises(FastDiffError, match=fix):
        FewStepGenerator.from_preset("z-image-turbo", dtype="float16", **load)
    with pytest.raises(FastDiffError, match=fix):
        FewStepGenerator.from_preset("z-image-turbo", optimize=Optimizations(precision="fp16", engine="torch"), **load)
    with pytest.raises(FastDiffError, match=fix):
        FewStepGenerator.from_pipeline("z-image-turbo", tiny_pipeline("zimage").to(torch.float16))


def test_the_accelerators_float16_default_loads_bfloat16(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch, small_sizes: None
) -> None:
    """No dtype asked on CUDA/MPS means float16, which this family refuses: it loads in its card's bfloat16."""
    monkeypatch.setattr(fastdiff.loading, "resolve_dtype", lambda dtype, device: dtype or torch.float16)
    gen = FewStepGenerator.from_preset(
        "z-image-turbo", device="cpu", cache_dir=hub_cache, local_files_only=True, optimize="none"
    )
    assert gen.dtype == torch.bfloat16 and gen.pipeline.text_encoder.dtype == torch.bfloat16
    assert pixels(gen(PROMPT, seed=0, **SMALL).images[0]).std() > 5  # bf16 makes an image, not NaN


def test_memory_that_cannot_fit_is_refused_before_loading(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastdiff.loading, "available_memory", lambda device: 1024)
    with pytest.raises(FastDiffError, match=r"z-image-turbo: its weights need about .* use dtype='bfloat16'"):
        FewStepGenerator.from_preset("z-image-turbo", device="cpu", cache_dir=hub_cache, local_files_only=True)
    refused = family("zimage").refused_dtypes  # on a GPU, half precision is offered as bfloat16 alone
    error = check_fits(what="z", needed=2**34, available=2**33, device=torch.device("cuda"), dtype=torch.float32)
    offered = check_fits(
        what="z", needed=2**34, available=2**33, device=torch.device("cuda"), dtype=torch.float32, refused=refused
    )
    assert "dtype='float16' or 'bfloat16'" in str(error) and "dtype='bfloat16' (half" in str(offered)


def test_cached_z_image_needs_no_download(hub_cache: Path) -> None:
    preset = presets.get("z-image-turbo")
    check_cached_or_reachable(preset, dtypes=["bfloat16"], cache_dir=hub_cache, local_files_only=True)  # no raise


def test_the_cuda_recipe_runs_on_cpu_tensors(zimage: FewStepGenerator) -> None:
    """The CUDA recipe's module changes on CPU tensors (its torch.compile left out, as only CUDA runs it): the VAE's
    QKV fused, the transformer left as is (diffusers offers no fused projections for it)."""
    recipe = Optimizations.level("default", compile=False).recipe_for("cuda")
    assert recipe.fuse_qkv
    fused = FewStepGenerator.from_pipeline("z-image-turbo", zimage.pipeline, optimize=recipe)
    got, expected = fused(PROMPT, seed=4, **SMALL).images[0], zimage(PROMPT, seed=4, **SMALL).images[0]
    assert np.abs(pixels(got) - pixels(expected)).max() <= 1


def test_cpu_levels_run_torch_and_max_decodes_with_taef1(hub_cache: Path, small_sizes: None) -> None:
    """OpenVINO converts UNets only: "default" and "max" run Z-Image in torch; "max" decodes with TAEF1 (its VAE
    is FLUX.1's)."""
    load = {"device": "cpu", "cache_dir": hub_cache, "local_files_only": True}
    assert FewStepGenerator.from_preset("z-image-turbo", optimize="default", **load).recipe.engine == "torch"
    gen = FewStepGenerator.from_preset("z-image-turbo", optimize="max", **load)
    assert type(gen.pipeline.vae).__name__ == "AutoencoderTiny" and gen.recipe.engine == "torch"
    assert gen(PROMPT, seed=0, **SMALL).images[0].size == (64, 64)


def test_a_diffusers_folder_and_from_pipeline_give_the_same_image(tmp_path: Path, small_sizes: None) -> None:
    folder = save_tiny_pipeline("zimage", tmp_path / "zimage", seed=3, fp16_variant=False)
    from_folder = FewStepGenerator.from_preset("z-image-turbo", source=folder, device="cpu", optimize="none")
    wrapped = FewStepGenerator.from_pipeline("z-image-turbo", tiny_pipeline("zimage", seed=3))
    assert (
        pixels(from_folder(PROMPT, seed=9, **SMALL).image).tolist()
        == pixels(wrapped(PROMPT, seed=9, **SMALL).image).tolist()
    )


@pytest.mark.parametrize("fuse", [True, False])
def test_load_lora_on_the_transformer_is_diffusers_image(fuse: bool, tmp_path: Path, small_sizes: None) -> None:
    """`gen.load_lora` puts a Z-Image LoRA on the transformer: fused, the image of `load_lora_weights` +
    `fuse_lora(lora_scale=)` + `unload_lora_weights`; unfused, of `set_adapters`."""
    lora = tiny_lora("zimage", tmp_path / "zimage_lora.safetensors", seed=5)
    gen = FewStepGenerator.from_pipeline("z-image-turbo", tiny_pipeline("zimage", seed=3))
    before = pixels(gen(PROMPT, seed=9, **SMALL).image)
    gen.load_lora(lora, scale=0.7, fuse=fuse)
    after = pixels(gen(PROMPT, seed=9, **SMALL).image)
    reference = with_lora(tiny_pipeline("zimage", seed=3), lora, scale=0.7, fuse=fuse)
    reference.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(9)
    expected = pixels(
        reference(PROMPT, num_inference_steps=8, guidance_scale=0.0, generator=generator, **SMALL).images[0]
    )
    assert np.abs(after - expected).max() <= 1 and np.abs(after - before).max() > 4


# --- serving ----------------------------------------------------------------------------------------------------


@pytest.fixture
def served(load: Any, small_sizes: None) -> FewStepGenerator:
    """A generator of its own (own counters, coalescing up to 4) over the session's tiny Z-Image modules."""
    return FewStepGenerator.from_pipeline("z-image-turbo", load("z-image-turbo").pipeline, max_batch=4)


def test_live_frames_are_the_plain_call(served: FewStepGenerator) -> None:
    frames = []
    with LiveSession(served, seed=11, **SMALL) as live:
        for change in ({"prompt": "a red house"}, {"seed": 12}, {"image": gradient(64, 64), "strength": 0.5}):
            live.update(**change)
            frames.append(live.wait(timeout=60))
    red, seed, half = frames
    assert pixels(red.image).tolist() == pixels(served("a red house", seed=11, **SMALL).image).tolist()
    assert pixels(seed.image).tolist() == pixels(served("a red house", seed=12, **SMALL).image).tolist()
    plain = served("a red house", seed=12, image=gradient(64, 64), strength=0.5).image
    assert pixels(half.image).tolist() == pixels(plain).tolist()


def test_map_gives_each_prompt_its_own_image(served: FewStepGenerator) -> None:
    prompts = ["a paper boat", "a very long paper boat on a pond", "a boat"]
    results = list(served.map(prompts, batch_size=2, progress=False, seed=100, **SMALL))
    assert [r.seed for r in results] == [100, 101, 102]
    for prompt, result in zip(prompts, results, strict=True):
        assert _close(result.image, served(prompt, seed=result.seed, **SMALL).image)


def test_fastdiff_batch_writes_the_images(tmp_path: Path, hub_cache: Path, load: Any, small_sizes: None) -> None:
    prompts = write_txt(tmp_path / "p.txt", ["a red fox", "a green frog on a lily pad"])
    out = tmp_path / "out"
    assert run(prompts, out, hub_cache, "--seed", "10", "--batch-size", "2", preset="z-image-turbo") == 0
    gen = load("z-image-turbo")
    for entry in assert_complete(out, 2):
        assert (entry["preset"], entry["steps"]) == ("z-image-turbo", 8)
        direct = gen(entry["prompt"], seed=entry["seed"], **SMALL).images[0]
        assert np.abs(pixels(out / entry["file"]) - pixels(direct)).max() <= 1


def test_threads_get_their_own_images(served: FewStepGenerator) -> None:
    cases = [(p, seed) for p in ("a red bird", "a blue bird over a wide blue lake") for seed in (0, 1)]
    expected = {case: served(case[0], seed=case[1], **SMALL).image for case in cases}
    wrong: list[Any] = []

    def worker(k: int) -> None:
        for i in range(4):
            case = cases[(k + i) % len(cases)]
            try:
                if not _close(served(case[0], seed=case[1], **SMALL).image, expected[case]):
                    wrong.append(case)
            except BaseException as err:  # any exception at all is a failure of thread safety
                wrong.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert served.stats.calls == len(cases) + 16


def test_presets_table_lists_z_image_turbo_with_its_licence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("z-image-turbo "))
    assert " 8 " in f" {line} " and "1024x1024" in line and "apache-2.0" in line and "non-commercial" not in line
