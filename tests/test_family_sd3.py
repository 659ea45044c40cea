"""SD 3.5 Large Turbo (StableDiffusion3Pipeline) behind the same facade: the card's image, img2img, seeds and
generators, batches, cached embeddings, each bad input refused or warned with its fix, and serving (the live session,
`gen.map`, `fastdiff batch`, threads). Tiny random-weight models from the test hub cache, under the real repo id."""

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

from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.cli import main
from fastdiff.families import family
from fastdiff.hub import check_cached_or_reachable
from fastdiff.recipe import decide_recipe
from fastdiff.serving import LiveSession
from fastdiff.testing import cached_repo_path, tiny_lora, tiny_sd3_pipeline

from .cards import card_pipeline, with_lora
from .test_bulk import assert_complete, pixels, run, write_txt

PRESET = "sd35-large-turbo"
PRESET_FAMILY = "sd3"
REPO = "stabilityai/stable-diffusion-3.5-large-turbo"
PROMPT = "a capybara holding a sign that reads hello"
HEIGHT, WIDTH = 128, 192  # not square, a multiple of 16 (VAE 8 × patch 2)
SIZE = {"height": 64, "width": 64}


@pytest.fixture
def sd3(load: Any, small_sizes: None) -> FewStepGenerator:
    gen: FewStepGenerator = load(PRESET)
    return gen


@cache
def _card(cache_dir: Path) -> Any:
    pipe, kwargs = card_pipeline(PRESET, cache_dir)
    pipe.set_progress_bar_config(disable=True)
    assert kwargs == {"guidance_scale": 0.0}
    return pipe


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _close(a: Image.Image, b: Image.Image) -> bool:
    return bool(np.abs(_pixels(a) - _pixels(b)).max() <= 1)


def _photo(height: int, width: int) -> Image.Image:
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], -1).astype(np.uint8))


def test_tiny_sd3_has_the_real_wiring_and_layout(hub_cache: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    pipe, again = tiny_sd3_pipeline(seed=1), tiny_sd3_pipeline(seed=1)
    assert torch.equal(torch.rand(1), expected)  # the caller's RNG is left alone
    assert torch.equal(pipe.transformer.pos_embed.proj.weight, again.transformer.pos_embed.proj.weight)
    assert (pipe.vae_scale_factor, pipe.patch_size, pipe.vae.config.latent_channels) == (8, 2, 16)
    assert pipe.transformer.config.in_channels == 16 and pipe.transformer.config.qk_norm == "rms_norm"
    assert (pipe.vae.config.scaling_factor, pipe.vae.config.shift_factor) == (1.5305, 0.0609)
    projections = pipe.text_encoder.config.projection_dim + pipe.text_encoder_2.config.projection_dim
    assert pipe.transformer.config.pooled_projection_dim == projections  # the pooled vectors, concatenated
    clip_width = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert pipe.text_encoder_3.config.d_model == pipe.transformer.config.joint_attention_dim > clip_width  # padded
    assert type(pipe.text_encoder).__name__ == type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert not pipe.transformer.training and not pipe.text_encoder_3.training
    snapshot = cached_repo_path(hub_cache, REPO)
    index = json.loads((snapshot / "model_index.json").read_text())
    assert index["tokenizer_3"] == ["transformers", "T5TokenizerFast"] and "image_encoder" not in index
    scheduler = json.loads((snapshot / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["_class_name"], scheduler["shift"]) == ("FlowMatchEulerDiscreteScheduler", 3.0)


def test_sd35_large_turbo_is_the_cards_image(sd3: FewStepGenerator, hub_cache: Path) -> None:
    """The card: StableDiffusion3Pipeline(prompt, num_inference_steps=4, guidance_scale=0.0), its only step count,
    with generator=torch.Generator("cpu").manual_seed(s)."""
    expected = _card(hub_cache)(
        PROMPT,
        num_inference_steps=4,
        guidance_scale=0.0,
        height=HEIGHT,
        width=WIDTH,
        generator=torch.Generator("cpu").manual_seed(11),
    ).images[0]
    got = sd3(PROMPT, seed=11, height=HEIGHT, width=WIDTH).images[0]
    assert got.size == (WIDTH, HEIGHT)
    assert _pixels(expected).std() > 5, "a flat reference would prove nothing"
    assert np.abs(_pixels(got) - _pixels(expected)).max() <= 1


def test_default_steps_size_and_licence_are_the_cards(sd3: FewStepGenerator) -> None:
    preset = sd3.preset
    assert (preset.default_steps, preset.steps, preset.guidance_scale, preset.variant) == (4, (4,), 0.0, None)
    assert (preset.height, preset.width, preset.max_sequence_length) == (1024, 1024, 256)
    assert preset.license == "stabilityai-ai-community" and preset.commercial_use  # below $1M revenue
    scheduler = sd3.pipeline.scheduler
    assert type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler" and scheduler.config.shift == 3.0
    assert sd3.dtype == torch.float32 and sd3.recipe.engine == "torch"


@pytest.mark.parametrize(("strength", "size"), [(0.6, (HEIGHT, WIDTH)), (0.3, (120, 200))])
def test_img2img_is_the_img2img_pipelines_image(
    strength: float, size: tuple[int, int], sd3: FewStepGenerator, hub_cache: Path
) -> None:
    """StableDiffusion3Img2ImgPipeline over the card's modules at the input's size (rounded down to multiples of
    16, which the pipeline needs; without height/width it would resize to 1024²); at least one step runs."""
    from diffusers import StableDiffusion3Img2ImgPipeline

    card = StableDiffusion3Img2ImgPipeline.from_pipe(_card(hub_cache))
    card.set_progress_bar_config(disable=True)
    init = _photo(*size)
    height, width = (side - side % 16 for side in size)
    expected = card(
        PROMPT,
        image=init,
        strength=strength,
        num_inference_steps=4,
        guidance_scale=0.0,
        height=height,
        width=width,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    got = sd3(PROMPT, image=init, strength=strength, seed=3).images[0]
    assert got.size == (width, height)
    assert np.abs(_pixels(got) - _pixels(expected)).max() <= 1


def test_an_array_input_off_the_multiple_of_16_is_resized_as_diffusers_would(
    sd3: FewStepGenerator, hub_cache: Path
) -> None:
    """A float HWC array of 72×88 (multiples of the VAE's 8, not of 16) runs at 64×80, as the img2img pipeline runs
    it when given that height/width (without them it refuses such sides)."""
    from diffusers import StableDiffusion3Img2ImgPipeline

    card = StableDiffusion3Img2ImgPipeline.from_pipe(_card(hub_cache))
    card.set_progress_bar_config(disable=True)
    array = np.asarray(_photo(72, 88), dtype=np.float32) / 255
    call = {"strength": 0.5, "guidance_scale": 0.0, "num_inference_steps": 4}
    expected = card(PROMPT, image=array[None], height=64, width=80, generator=torch.Generator().manual_seed(3), **call)
    got = sd3(PROMPT, image=array, strength=0.5, seed=3).images[0]
    assert got.size == (80, 64) and _close(got, expected.images[0])


def test_generator_is_seed_and_a_batch_is_each_image_alone(sd3: FewStepGenerator) -> None:
    alone = [_pixels(sd3(PROMPT, seed=s, **SIZE).images[0]) for s in (5, 6)]
    by_generator = sd3(PROMPT, generator=torch.Generator("cpu").manual_seed(5), **SIZE).images[0]
    assert np.array_equal(_pixels(by_generator), alone[0])
    batch = sd3(PROMPT, seed=5, num_images=2, **SIZE)
    assert batch.seeds == [5, 6]
    for got, expected in zip(batch.images, alone, strict=True):
        assert np.abs(_pixels(got) - expected).max() <= 1
    listed = sd3([PROMPT, "a lighthouse"], seed=5, **SIZE).images  # a prompt list: one image each, seed + i
    assert np.abs(_pixels(listed[0]) - alone[0]).max() <= 1
    assert _close(listed[1], sd3("a lighthouse", seed=6, **SIZE).images[0])


def test_guidance_runs_cfg_with_the_negative_prompt(sd3: FewStepGenerator, hub_cache: Path) -> None:
    """SD3 runs classifier-free guidance above 1 (unlike FLUX.1 [schnell]): warned, and still diffusers' image."""
    with pytest.warns(FastDiffWarning, match=r"distilled to run without guidance; .* twice the transformer work"):
        got = sd3(PROMPT, guidance_scale=3.0, negative_prompt="blurry", seed=2, **SIZE).images[0]
    expected = _card(hub_cache)(
        PROMPT,
        negative_prompt="blurry",
        num_inference_steps=4,
        guidance_scale=3.0,
        generator=torch.Generator("cpu").manual_seed(2),
        **SIZE,
    ).images[0]
    assert _close(got, expected)
    embeds = sd3.encode(PROMPT, "blurry", guidance=True)
    assert set(embeds) == {
        "prompt_embeds",
        "pooled_prompt_embeds",
        "negative_prompt_embeds",
        "negative_pooled_prompt_embeds",
    }


def test_prompt_embeddings_are_cached(sd3: FewStepGenerator) -> None:
    prompt = "a lighthouse at dusk, cached"
    first = sd3(prompt, seed=1, **SIZE)
    hits = sd3.embedding_cache.hits
    again = sd3(prompt, seed=1, **SIZE)
    assert sd3.embedding_cache.hits == hits + 1
    assert np.array_equal(_pixels(first.images[0]), _pixels(again.images[0]))
    embeds = sd3.encode(prompt)
    assert set(embeds) == {"prompt_embeds", "pooled_prompt_embeds"}
    assert embeds["prompt_embeds"].shape[1] == 77 + 256  # CLIP's 77, then T5 padded to max_sequence_length


def test_bad_inputs_name_the_fix(sd3: FewStepGenerator) -> None:
    with pytest.raises(FastDiffError, match=r"sd35-large-turbo runs exactly 4 steps .*, got steps=2; use steps=4"):
        sd3(PROMPT, steps=2)
    with pytest.raises(FastDiffError, match=r"height=264 is not a multiple of 16 .*: use 256 or 272"):
        sd3(PROMPT, height=264, width=256)  # a multiple of the VAE's 8, not of its 2×2 patches
    with pytest.raises(FastDiffError, match=r"width=200 is not a multiple of 16"):
        sd3(PROMPT, height=256, width=200)
    with pytest.raises(FastDiffError, match=r"height=3584 is larger than 3072"):  # 192 position embeddings × 16
        sd3(PROMPT, height=3584, width=1024)
    with pytest.raises(FastDiffError, match=r"image is 3200x64; img2img takes sides from 16 to 3072 pixels"):
        sd3(PROMPT, image=_photo(64, 3200))
    with pytest.raises(FastDiffError, match="guidance_scale must be a finite number"):
        sd3(PROMPT, guidance_scale=float("nan"))


def test_a_prompt_past_max_sequence_length_warns(sd3: FewStepGenerator) -> None:
    long = "word " * 80  # 321 T5 tokens with the tiny tokenizer ("▁w", "o", "r", "d" a word, and "</s>")
    with pytest.warns(FastDiffWarning, match=r"T5 tokens; this model reads only the first 256 \(max_sequence_length\)"):
        sd3(long, **SIZE)
    past_clip = "a red fox " * 12  # past CLIP's 77, within T5's 256: the CLIPs' part of the sequence misses the rest
    with pytest.warns(FastDiffWarning, match=r"CLIP tokens; the two CLIP encoders read only the first 77 .* T5 reads"):
        sd3(past_clip, **SIZE)


def test_cached_sd3_needs_no_download_and_an_uncached_one_names_the_fix(hub_cache: Path, tmp_path: Path) -> None:
    preset = presets.get(PRESET)
    check_cached_or_reachable(preset, dtypes=["float32"], cache_dir=hub_cache, local_files_only=True)  # no raise
    with pytest.raises(FastDiffError, match=r"stable-diffusion-3\.5-large-turbo \(pipeline\)") as raised:
        check_cached_or_reachable(preset, dtypes=["bfloat16"], cache_dir=tmp_path / "empty", local_files_only=True)
    assert "fastdiff download sd35-large-turbo" in str(raised.value)


def test_live_session_and_map_give_the_plain_calls_image(sd3: FewStepGenerator) -> None:
    own = FewStepGenerator.from_pipeline(PRESET, sd3.pipeline)  # its own embedding cache counters
    sketch = _photo(64, 64)
    with LiveSession(own, seed=11, **SIZE) as live:
        live.update(prompt="a red house")
        text = live.wait(timeout=60)
        live.update(image=sketch, strength=0.5)
        half = live.wait(timeout=60)
    assert _close(text.image, own("a red house", seed=11, **SIZE).image)
    assert _close(half.image, own("a red house", seed=11, image=sketch, strength=0.5).image)
    prompts = [f"a paper boat, picture {i}" for i in range(3)]
    results = list(own.map(prompts, batch_size=2, progress=False, seed=100, **SIZE))  # 2 + 1
    assert [r.seed for r in results] == [100, 101, 102]
    for prompt, result in zip(prompts, results, strict=True):
        assert _close(result.image, own(prompt, seed=result.seed, **SIZE).image)


def test_threads_on_one_generator_get_their_own_images(sd3: FewStepGenerator) -> None:
    gen = FewStepGenerator.from_pipeline(PRESET, sd3.pipeline, max_batch=4)
    expected = {seed: _pixels(gen(PROMPT, seed=seed, **SIZE).image) for seed in range(4)}
    wrong: list[int] = []

    def worker(seed: int) -> None:
        for _ in range(3):
            if not np.abs(_pixels(gen(PROMPT, seed=seed, **SIZE).image) - expected[seed]).max() <= 1:
                wrong.append(seed)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_fastdiff_batch_writes_the_plain_calls_images(
    sd3: FewStepGenerator, hub_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_txt(tmp_path / "p.txt", ["a red fox", "a green frog"])
    out = tmp_path / "out"
    assert run(prompts, out, hub_cache, "--seed", "10", "--batch-size", "2", preset=PRESET) == 0
    assert "made 2, skipped 0 (done before), failed 0" in capsys.readouterr().out
    for entry in assert_complete(out, 2):
        assert (entry["seed"], entry["steps"], entry["preset"]) == (10 + entry["index"], 4, PRESET)
        direct = sd3(entry["prompt"], seed=entry["seed"], **SIZE).images[0]
        assert np.abs(pixels(out / entry["file"]) - pixels(direct)).max() <= 1


def test_presets_table_lists_sd35_large_turbo_with_its_licence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{PRESET} "))
    assert " sd3 " in line and " 4 " in line and "1024x1024" in line and "stabilityai-ai-community" in line


def test_default_and_max_levels_run_the_torch_engine(
    sd3: FewStepGenerator, hub_cache: Path, cpu_engine_default: None
) -> None:
    """OpenVINO converts UNets only: "default" on the CPU runs SD3 in torch, within tolerance of "none"; "max"
    decodes with the tiny autoencoder of TAESD3's layout."""
    loaded = {"device": "cpu", "cache_dir": hub_cache, "local_files_only": True}
    default = FewStepGenerator.from_preset(PRESET, optimize="default", **loaded)
    assert default.recipe.engine == "torch"
    assert _close(default(PROMPT, seed=4, **SIZE).images[0], sd3(PROMPT, seed=4, **SIZE).images[0])
    fastest = FewStepGenerator.from_preset(PRESET, optimize="max", **loaded)
    assert (
        type(fastest.pipeline.vae).__name__ == "AutoencoderTiny" and fastest.pipeline.vae.config.latent_channels == 16
    )
    assert fastest(PROMPT, seed=0, **SIZE).images[0].size == (64, 64)


def test_the_cuda_recipe_runs_on_cpu_tensors_without_fused_qkv(sd3: FewStepGenerator) -> None:
    """The CUDA recipe's module changes on CPU tensors (its torch.compile left out: minutes on 2 cores), without
    fused QKV: diffusers' fused joint attention skips SD 3.5's RMS QK-norm, which moves the image by several
    levels; asked for by name, it is refused."""
    sd3_family = family(PRESET_FAMILY)
    recipe = decide_recipe(Optimizations.level("default", compile=False), torch.device("cuda"), family=sd3_family)
    assert not recipe.fuse_qkv and recipe.channels_last
    fused = FewStepGenerator.from_pipeline(PRESET, tiny_sd3_pipeline(seed=2), optimize=recipe)
    plain = FewStepGenerator.from_pipeline(PRESET, tiny_sd3_pipeline(seed=2))
    assert _close(fused(PROMPT, seed=4, **SIZE).images[0], plain(PROMPT, seed=4, **SIZE).images[0])
    with pytest.raises(FastDiffError, match=r"fused QKV changes the sd3 family's images .*: pass fuse_qkv=False"):
        decide_recipe(Optimizations(fuse_qkv=True), torch.device("cuda"), family=sd3_family)


def test_a_precision_casts_all_three_text_encoders(small_sizes: None) -> None:
    """precision="bf16" casts T5 (text_encoder_3) with the CLIPs: SD3 joins their outputs into one sequence."""
    gen = FewStepGenerator.from_pipeline(PRESET, tiny_sd3_pipeline(seed=2), optimize=Optimizations(precision="bf16"))
    encoders = (gen.pipeline.text_encoder, gen.pipeline.text_encoder_2, gen.pipeline.text_encoder_3)
    assert {encoder.dtype for encoder in encoders} == {gen.pipeline.transformer.dtype} == {torch.bfloat16}
    assert _pixels(gen(PROMPT, seed=1, **SIZE).images[0]).std() > 5


def test_memory_estimate_counts_all_five_modules_and_refuses_before_loading(
    sd3: FewStepGenerator, hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transformer, the VAE and the three text encoders, from the safetensors headers; too little memory is
    refused before any weights are read, with bf16 offered (the card's dtype)."""
    import fastdiff.loading
    from fastdiff.memory import pipeline_files, weights_bytes

    files = pipeline_files(cached_repo_path(hub_cache, REPO), variant=None)
    assert {f.parent.name for f in files} == {"transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"}
    modules = [m for m in sd3.pipeline.components.values() if isinstance(m, torch.nn.Module)]
    tensors = {t.data_ptr(): t for m in modules for t in m.state_dict().values() if t.is_floating_point()}
    assert weights_bytes(files, dtype=torch.float32) == sum(t.numel() * 4 for t in tensors.values())  # T5's tied once
    monkeypatch.setattr(fastdiff.loading, "available_memory", lambda device: 1024)
    with pytest.raises(FastDiffError, match=r"sd35-large-turbo: its weights need about .* dtype='bfloat16'"):
        FewStepGenerator.from_preset(PRESET, device="cpu", cache_dir=hub_cache, local_files_only=True)


@pytest.mark.parametrize("fuse", [True, False])
def test_load_lora_on_the_transformer_is_diffusers_image(fuse: bool, tmp_path: Path, small_sizes: None) -> None:
    """`gen.load_lora` puts an SD3 LoRA (diffusers' `transformer.…lora_A/B` keys) on the transformer: fused, the
    image of `load_lora_weights` + `fuse_lora(lora_scale=)` + `unload_lora_weights`; unfused, of `set_adapters`."""
    lora = tiny_lora("sd3", tmp_path / "sd3_lora.safetensors", seed=5)
    gen = FewStepGenerator.from_pipeline(PRESET, tiny_sd3_pipeline(seed=3))
    before = gen(PROMPT, seed=9, **SIZE).images[0]
    gen.load_lora(lora, scale=0.7, fuse=fuse)
    after = gen(PROMPT, seed=9, **SIZE).images[0]
    reference = with_lora(tiny_sd3_pipeline(seed=3), lora, scale=0.7, fuse=fuse)
    reference.set_progress_bar_config(disable=True)
    call = {"num_inference_steps": 4, "guidance_scale": 0.0, "generator": torch.Generator().manual_seed(9), **SIZE}
    expected = reference(PROMPT, **call).images[0]
    assert _close(after, expected) and np.abs(_pixels(after) - _pixels(before)).max() > 4
