"""The flow-matching transformer families (FLUX.1-schnell) behind the same facade: the card's image for every
allowed step count, img2img, seeds and generators, batches, cached embeddings, and each bad input refused or
warned with its fix. Tiny random-weight models from the test hub cache, under the real repo id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import fastdiff.families
import fastdiff.recipe
from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.cli import main
from fastdiff.hub import check_cached_or_reachable, download
from fastdiff.testing import (
    cached_repo_path,
    save_tiny_pipeline,
    tiny_flux_pipeline,
    tiny_lora,
    tiny_t5_tokenizer,
)

from .cards import card_pipeline, with_lora
from .images import gradient

PROMPT = "a golden retriever in autumn leaves"
HEIGHT, WIDTH = 256, 384  # not square: the packed latents must be unpacked to the right shape


@pytest.fixture
def flux(load: Any, small_sizes: None) -> FewStepGenerator:
    gen: FewStepGenerator = load("flux-schnell")
    return gen


@cache
def _card(cache_dir: Path) -> Any:
    pipe, kwargs = card_pipeline("flux-schnell", cache_dir)
    pipe.set_progress_bar_config(disable=True)
    assert kwargs == {"guidance_scale": 0.0, "max_sequence_length": 256}
    return pipe


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_tiny_flux_has_the_real_wiring_and_layout(hub_cache: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    pipe, again = tiny_flux_pipeline(seed=1), tiny_flux_pipeline(seed=1)
    assert torch.equal(torch.rand(1), expected)  # the caller's RNG is left alone
    assert torch.equal(pipe.transformer.x_embedder.weight, again.transformer.x_embedder.weight)
    assert pipe.vae_scale_factor == 8 and pipe.image_processor.config.vae_scale_factor == 16
    assert pipe.vae.config.latent_channels * 4 == pipe.transformer.config.in_channels == 64
    assert not pipe.transformer.config.guidance_embeds and not pipe.transformer.training
    t5 = tiny_t5_tokenizer()
    assert (t5.pad_token_id, t5.eos_token_id) == (0, 1) and t5("a cat").input_ids[-1] == t5.eos_token_id
    snapshot = cached_repo_path(hub_cache, "black-forest-labs/FLUX.1-schnell")
    index = json.loads((snapshot / "model_index.json").read_text())
    assert index["tokenizer_2"] == ["transformers", "T5TokenizerFast"] and "image_encoder" not in index
    scheduler = json.loads((snapshot / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["shift"], scheduler["use_dynamic_shifting"]) == (1.0, False)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_flux_schnell_is_the_cards_image(steps: int, flux: FewStepGenerator, hub_cache: Path) -> None:
    """The card: FluxPipeline(prompt, guidance_scale=0.0, num_inference_steps=N, max_sequence_length=256,
    generator=torch.Generator("cpu").manual_seed(s))."""
    expected = _card(hub_cache)(
        PROMPT,
        guidance_scale=0.0,
        num_inference_steps=steps,
        max_sequence_length=256,
        height=HEIGHT,
        width=WIDTH,
        generator=torch.Generator("cpu").manual_seed(11),
    ).images[0]
    got = flux(PROMPT, steps=steps, seed=11, height=HEIGHT, width=WIDTH).images[0]
    assert got.size == (WIDTH, HEIGHT)
    assert _pixels(expected).std() > 5, "a flat reference would prove nothing"
    assert np.abs(_pixels(got) - _pixels(expected)).max() <= 1, f"flux-schnell@{steps}"


def test_default_steps_and_size_are_the_cards(flux: FewStepGenerator) -> None:
    preset = flux.preset
    assert (preset.default_steps, preset.steps, preset.guidance_scale) == (4, (1, 2, 3, 4), 0.0)
    assert (preset.height, preset.width, preset.max_sequence_length, preset.license) == (1024, 1024, 256, "apache-2.0")
    scheduler = flux.pipeline.scheduler
    assert type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert scheduler.config.shift == 1.0 and not scheduler.config.use_dynamic_shifting  # the repo's, as is
    assert flux.dtype == torch.float32 and flux.pipeline.transformer.dtype == torch.float32


@pytest.mark.parametrize(("steps", "strength"), [(4, 0.6), (1, 0.5), (2, 0.3)])
def test_img2img_is_the_img2img_pipelines_image(
    steps: int, strength: float, flux: FewStepGenerator, hub_cache: Path
) -> None:
    """FluxImg2ImgPipeline over the card's modules, at the input's own size (the pipeline would resize to 1024²
    without height/width); FLUX runs at least one step at any strength, so nothing is lengthened."""
    from diffusers import FluxImg2ImgPipeline

    card = FluxImg2ImgPipeline.from_pipe(_card(hub_cache))
    card.set_progress_bar_config(disable=True)
    init = gradient(HEIGHT, WIDTH)
    expected = card(
        PROMPT,
        image=init,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=0.0,
        max_sequence_length=256,
        height=HEIGHT,
        width=WIDTH,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    got = flux(PROMPT, image=init, strength=strength, steps=steps, seed=3).images[0]
    assert got.size == (WIDTH, HEIGHT)
    assert np.abs(_pixels(got) - _pixels(expected)).max() <= 1


def test_generator_is_seed_and_a_batch_is_each_image_alone(flux: FewStepGenerator) -> None:
    size = {"height": 128, "width": 128, "steps": 2}
    alone = [_pixels(flux(PROMPT, seed=s, **size).images[0]) for s in (5, 6)]
    by_generator = flux(PROMPT, generator=torch.Generator("cpu").manual_seed(5), **size).images[0]
    assert np.array_equal(_pixels(by_generator), alone[0])
    batch = flux(PROMPT, seed=5, num_images=2, **size)
    assert batch.seeds == [5, 6]
    for got, expected in zip(batch.images, alone, strict=True):
        assert np.abs(_pixels(got) - expected).max() <= 1
    generators = [torch.Generator("cpu").manual_seed(s) for s in (6, 5)]
    listed = flux(PROMPT, generator=generators, num_images=2, **size).images
    assert np.abs(_pixels(listed[0]) - alone[1]).max() <= 1 and np.abs(_pixels(listed[1]) - alone[0]).max() <= 1


def test_prompt_embeddings_are_cached(flux: FewStepGenerator) -> None:
    prompt = "a lighthouse at dusk, cached"
    first = flux(prompt, seed=1, steps=1, height=128, width=128)
    hits = flux.embedding_cache.hits
    again = flux(prompt, seed=1, steps=1, height=128, width=128)
    assert flux.embedding_cache.hits == hits + 1
    assert np.array_equal(_pixels(first.images[0]), _pixels(again.images[0]))
    embeds = flux.encode(prompt)
    assert set(embeds) == {"prompt_embeds", "pooled_prompt_embeds"}
    assert embeds["prompt_embeds"].shape[1] == 256  # T5 padded to the card's max_sequence_length


def test_bad_inputs_name_the_fix(flux: FewStepGenerator) -> None:
    with pytest.raises(FastDiffError, match=r"flux-schnell runs 1-4 steps, got steps=5; use steps=4"):
        flux(PROMPT, steps=5)
    with pytest.raises(FastDiffError, match=r"height=264 is not a multiple of 16 .*: use 256 or 272"):
        flux(PROMPT, height=264, width=256)
    with pytest.raises(FastDiffError, match=r"width=200 is not a multiple of 16"):
        flux(PROMPT, height=256, width=200)
    with pytest.warns(FastDiffWarning, match=r"distilled to run without guidance.*guidance_scale=0.0"):
        flux(PROMPT, guidance_scale=3.5, steps=1, height=128, width=128)


def test_a_prompt_past_max_sequence_length_warns(flux: FewStepGenerator) -> None:
    long = "word " * 80  # 321 T5 tokens with the tiny tokenizer ("▁w", "o", "r", "d" a word, and "</s>")
    with pytest.warns(FastDiffWarning, match=r"T5 tokens; this model reads only the first 256 \(max_sequence_length\)"):
        flux(long, steps=1, height=128, width=128)
    past_clip = "a red fox " * 12  # past CLIP's 77, well within T5's 256: nothing is lost that matters
    with pytest.warns() as record:
        flux(past_clip, steps=1, height=128, width=128)
    assert not [w for w in record if "tokens" in str(w.message)]


@pytest.fixture
def flux_default(hub_cache: Path, small_sizes: None) -> Iterator[FewStepGenerator]:
    yield FewStepGenerator.from_preset(
        "flux-schnell", device="cpu", cache_dir=hub_cache, local_files_only=True, optimize="default"
    )


def test_default_level_runs_the_torch_engine(
    flux_default: FewStepGenerator, flux: FewStepGenerator, cpu_engine_default: None
) -> None:
    """OpenVINO converts UNets only: "default" on the CPU runs FLUX in torch, within tolerance of "none"."""
    assert flux_default.recipe.engine == "torch"
    size = {"steps": 2, "seed": 4, "height": 128, "width": 128}
    got, expected = flux_default(PROMPT, **size).images[0], flux(PROMPT, **size).images[0]
    assert np.abs(_pixels(got) - _pixels(expected)).max() <= 1
    with pytest.raises(FastDiffError, match="converts UNets only.*engine='torch'"):
        FewStepGenerator.from_pipeline("flux-schnell", flux.pipeline, optimize=Optimizations(engine="openvino"))


def test_the_cuda_recipe_runs_on_cpu_tensors(flux: FewStepGenerator) -> None:
    """The CUDA recipe's module changes (fused QKV in the transformer and the VAE), applied to CPU tensors; its
    torch.compile is left out (minutes on 2 cores), as only CUDA runs it."""
    recipe = Optimizations.level("default", compile=False).recipe_for("cuda")
    assert recipe.fuse_qkv
    fused = FewStepGenerator.from_pipeline("flux-schnell", flux.pipeline, optimize=recipe)
    size = {"steps": 2, "seed": 4, "height": 128, "width": 128}
    got, expected = fused(PROMPT, **size).images[0], flux(PROMPT, **size).images[0]
    assert np.abs(_pixels(got) - _pixels(expected)).max() <= 1


def test_the_cuda_recipe_compiles_the_repeated_blocks_regionally(flux: FewStepGenerator) -> None:
    """A transformer's compile is diffusers' regional one (each block class compiled once, so a new size compiles a
    block, not the model), without CUDA graphs; aot_eager on CPU tensors traces what inductor would (see
    test_device_recipes for why not inductor here)."""
    recipe = Optimizations.level("default", compile_backend="aot_eager").recipe_for("cuda")
    family = fastdiff.families.family("flux")
    recipe = fastdiff.recipe.decide_recipe(recipe.optimizations, torch.device("cuda"), family=family)
    assert recipe.compile and recipe.compile_mode is None and not recipe.cuda_graphs
    compiled = FewStepGenerator.from_pipeline("flux-schnell", flux.pipeline, optimize=recipe)
    transformer = compiled.pipeline.transformer
    assert type(transformer).__name__ == "FluxTransformer2DModel"  # the model itself is not wrapped: its blocks are
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    assert all(block._compiled_call_impl is not None for block in blocks)
    size = {"steps": 2, "seed": 4, "height": 128, "width": 128}
    with pytest.warns(FastDiffWarning, match="compiles for this shape"):
        got = compiled(PROMPT, **size).images[0]
    assert np.abs(_pixels(got) - _pixels(flux(PROMPT, **size).images[0])).max() <= 1


def test_max_level_decodes_with_the_tiny_autoencoder(hub_cache: Path, small_sizes: None) -> None:
    gen = FewStepGenerator.from_preset(
        "flux-schnell", device="cpu", cache_dir=hub_cache, local_files_only=True, optimize="max"
    )
    assert type(gen.pipeline.vae).__name__ == "AutoencoderTiny" and gen.recipe.engine == "torch"
    image = gen(PROMPT, steps=1, seed=0, height=128, width=128).images[0]
    assert image.size == (128, 128)


def test_a_diffusers_folder_and_from_pipeline_give_the_same_image(tmp_path: Path, small_sizes: None) -> None:
    folder = save_tiny_pipeline("flux", tmp_path / "flux", seed=3, fp16_variant=False)
    from_folder = FewStepGenerator.from_preset("flux-schnell", source=folder, device="cpu", optimize="none")
    wrapped = FewStepGenerator.from_pipeline(
        "flux-schnell", tiny_flux_pipeline(seed=3), optimize="none"
    )  # the same level as the folder's: "default" may compute in bf16 where the CPU has it
    size = {"steps": 2, "seed": 9, "height": 128, "width": 128}
    # Bit-equal weights, but mmapped files and in-memory tensors can take different oneDNN kernels (seen on an AMD
    # EPYC, family 25): at most 1/255 apart, the parity tolerance.
    difference = _pixels(from_folder(PROMPT, **size).images[0]) - _pixels(wrapped(PROMPT, **size).images[0])
    assert np.abs(difference).max() <= 1


def test_cached_flux_needs_no_download(hub_cache: Path) -> None:
    """The CLI's "is it cached?" check looks for the transformer (one file, or the real repo's shard index)."""
    flux = presets.get("flux-schnell")
    check_cached_or_reachable(flux, dtypes=["float32"], cache_dir=hub_cache, local_files_only=True)  # no raise
    assert download(flux, dtype="float32", cache_dir=hub_cache)  # offline: all cached


def test_load_checkpoint_puts_a_transformer_state_dict_in_place(tmp_path: Path, small_sizes: None) -> None:
    """`gen.load_checkpoint` loads into the family's denoiser: FLUX's transformer, with diffusers' image after it."""
    gen = FewStepGenerator.from_pipeline("flux-schnell", tiny_flux_pipeline(seed=3))
    size = {"steps": 2, "seed": 9, "height": 128, "width": 128}
    before = _pixels(gen(PROMPT, **size).images[0])
    other = tiny_flux_pipeline(seed=4).transformer
    save_file(other.state_dict(), tmp_path / "transformer.safetensors")
    save_file({k: v for k, v in list(other.state_dict().items())[1:]}, tmp_path / "short.safetensors")
    with pytest.raises(FastDiffError, match="does not fit this FluxTransformer2DModel"):
        gen.load_checkpoint(tmp_path / "short.safetensors")
    assert np.array_equal(_pixels(gen(PROMPT, **size).images[0]), before)  # a refused file changed nothing
    gen.load_checkpoint(tmp_path / "transformer.safetensors")
    reference = tiny_flux_pipeline(seed=3)
    reference.transformer = other
    expected = _pixels(FewStepGenerator.from_pipeline("flux-schnell", reference)(PROMPT, **size).images[0])
    after = _pixels(gen(PROMPT, **size).images[0])
    assert np.array_equal(after, expected) and not np.array_equal(after, before)


def _diffusers_image(pipe: Any, **size: int) -> np.ndarray:
    """Plain diffusers, as the card calls it."""
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(size.pop("seed"))
    steps = size.pop("steps")
    kwargs = {"guidance_scale": 0.0, "num_inference_steps": steps, "max_sequence_length": 256, **size}
    return _pixels(pipe(PROMPT, generator=generator, **kwargs).images[0])


@pytest.mark.parametrize("fuse", [True, False])
def test_load_lora_on_the_transformer_is_diffusers_image(fuse: bool, tmp_path: Path, small_sizes: None) -> None:
    """`gen.load_lora` puts a FLUX LoRA (diffusers' `transformer.…lora_A/B` keys) on the transformer: fused, the
    image of `load_lora_weights` + `fuse_lora(lora_scale=)` + `unload_lora_weights`; unfused, of `set_adapters`."""
    lora = tiny_lora("flux", tmp_path / "flux_lora.safetensors", seed=5)
    gen = FewStepGenerator.from_pipeline("flux-schnell", tiny_flux_pipeline(seed=3))
    size = {"steps": 2, "seed": 9, "height": 128, "width": 128}
    before = _pixels(gen(PROMPT, **size).images[0])
    gen.load_lora(lora, scale=0.7, fuse=fuse)
    after = _pixels(gen(PROMPT, **size).images[0])
    expected = _diffusers_image(with_lora(tiny_flux_pipeline(seed=3), lora, scale=0.7, fuse=fuse), **size)
    # the tiny transformer moves the image by a few levels: far past the 1/255 that parity allows
    assert np.abs(after - expected).max() <= 1 and np.abs(after - before).max() > 4


def test_an_uncached_flux_names_what_is_missing_not_a_unet(tmp_path: Path) -> None:
    """Nothing cached: the whole pipeline is named, never a `unet/` file FLUX does not have."""
    flux = presets.get("flux-schnell")
    with pytest.raises(FastDiffError, match=r"FLUX\.1-schnell \(pipeline\)") as raised:
        check_cached_or_reachable(flux, dtypes=["float32"], cache_dir=tmp_path / "empty", local_files_only=True)
    assert "unet/" not in str(raised.value) and "fastdiff download flux-schnell" in str(raised.value)


def test_export_refuses_a_transformer_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "onnx", "--preset", "flux-schnell", "--out", str(tmp_path / "out")]) != 0
    assert "export covers the UNet families" in capsys.readouterr().err


def test_presets_table_lists_flux_schnell_with_its_licence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("flux-schnell "))
    assert "1-4" in line and "1024x1024" in line and "apache-2.0" in line and "non-commercial" not in line
