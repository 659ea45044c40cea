"""FLUX.2 [klein] 4B behind the same facade: the card's image, seeds and generators, batches, cached embeddings,
each bad input refused or warned with its fix (image= refused: diffusers has no img2img pipeline for it), and the
serving paths. Tiny random-weight models from the test hub cache, under the real repo id."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import Flux2KleinPipeline
from PIL import Image

import fastdiff.loading
from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.cli import main
from fastdiff.hub import check_cached_or_reachable
from fastdiff.memory import pipeline_files, weights_bytes
from fastdiff.serving import LiveSession
from fastdiff.testing import cached_repo_path, save_tiny_pipeline, tiny_flux2_pipeline, tiny_lora
from fastdiff.testing.tiny_flux2 import tiny_qwen_tokenizer

from .test_bulk import assert_complete, pixels, run, write_txt
from .test_parity import _card as parity_card

NAME, REPO = "flux2-klein-4b", "black-forest-labs/FLUX.2-klein-4B"
PROMPT = "a red fox in fresh snow"
HEIGHT, WIDTH = 64, 96  # not square: the latents are scattered back by their position ids
SIZE = {"height": 64, "width": 64}


@pytest.fixture
def klein(load: Any, small_sizes: None) -> FewStepGenerator:
    gen: FewStepGenerator = load(NAME)
    return gen


def _card(cache_dir: Path) -> Any:
    """The card's pipeline (test_parity's, loaded once), after checking the call arguments the card adds."""
    pipe, kwargs = parity_card(NAME, cache_dir)
    assert kwargs == {"guidance_scale": 1.0}
    return pipe


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _close(a: Image.Image, b: Image.Image) -> bool:
    return bool(np.abs(_pixels(a) - _pixels(b)).max() <= 1)


def test_tiny_klein_has_the_real_wiring_and_layout(hub_cache: Path) -> None:
    rng = torch.random.get_rng_state()
    pipe, again = tiny_flux2_pipeline(seed=1), tiny_flux2_pipeline(seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the caller's RNG is left alone
    assert torch.equal(pipe.transformer.x_embedder.weight, again.transformer.x_embedder.weight)
    assert pipe.vae_scale_factor == 8 and pipe.image_processor.config.vae_scale_factor == 16
    assert pipe.vae.config.latent_channels * 4 == pipe.transformer.config.in_channels == 128
    assert tuple(pipe.vae.config.patch_size) == (2, 2) and pipe.vae.bn.num_features == 128
    assert not torch.equal(pipe.vae.bn.running_mean, torch.zeros(128))  # trained-like statistics to undo
    assert not pipe.transformer.config.guidance_embeds and not pipe.transformer.training and pipe.config.is_distilled
    # the pipeline stacks the hidden states after layers 9, 18 and 27: three widths side by side, 27 intermediate
    text = pipe.text_encoder.config
    assert pipe.transformer.config.joint_attention_dim == 3 * text.hidden_size and text.num_hidden_layers > 27
    assert type(pipe.text_encoder).__name__ == "Qwen3ForCausalLM"
    tokenizer = tiny_qwen_tokenizer()
    messages = [{"role": "user", "content": "a cat"}]
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert rendered == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tokenizer.convert_ids_to_tokens(tokenizer(rendered).input_ids)[0] == "<|im_start|>"  # one token
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.padding_side == "right"
    snapshot = cached_repo_path(hub_cache, REPO)
    index = json.loads((snapshot / "model_index.json").read_text())
    assert index["tokenizer"] == ["transformers", "Qwen2TokenizerFast"] and index["is_distilled"] is True
    scheduler = json.loads((snapshot / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["use_dynamic_shifting"] and scheduler["time_shift_type"] == "exponential"


@pytest.mark.parametrize("steps", presets.get(NAME).steps)
def test_klein_is_the_cards_image(steps: int, klein: FewStepGenerator, hub_cache: Path) -> None:
    """The card: Flux2KleinPipeline(prompt=..., guidance_scale=1.0, num_inference_steps=4,
    generator=torch.Generator(...).manual_seed(s))."""
    card = {"prompt": PROMPT, "guidance_scale": 1.0, "num_inference_steps": steps, "height": HEIGHT, "width": WIDTH}
    expected = _card(hub_cache)(**card, generator=torch.Generator("cpu").manual_seed(11)).images[0]
    got = klein(PROMPT, steps=steps, seed=11, height=HEIGHT, width=WIDTH).images[0]
    assert got.size == (WIDTH, HEIGHT)
    assert _pixels(expected).std() > 5, "a flat reference would prove nothing"
    assert np.array_equal(_pixels(got), _pixels(expected)), f"{NAME}@{steps}"


def test_default_steps_and_size_are_the_cards(klein: FewStepGenerator) -> None:
    preset = klein.preset
    assert (preset.default_steps, preset.steps, preset.guidance_scale) == (4, (4,), 1.0)
    assert (preset.height, preset.width, preset.max_sequence_length, preset.license) == (1024, 1024, 512, "apache-2.0")
    assert preset.variant is None and preset.scheduler == "repo"
    scheduler = klein.pipeline.scheduler
    assert type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler" and scheduler.config.use_dynamic_shifting
    assert klein.dtype == torch.float32 and klein.pipeline.transformer.dtype == torch.float32


def test_decode_is_the_pipelines_own(klein: FewStepGenerator, hub_cache: Path) -> None:
    """output_type="latent" gives (B, 32, H/8, W/8), already de-normalized and unpatchified; the adapter's decode of
    them is the pipeline's "pil" image."""
    card = _card(hub_cache)
    call = {"prompt": PROMPT, "num_inference_steps": 4, "height": HEIGHT, "width": WIDTH}
    latents = card(**call, generator=torch.Generator("cpu").manual_seed(2), output_type="latent").images
    assert latents.shape == (1, 32, HEIGHT // 8, WIDTH // 8)
    expected = card(**call, generator=torch.Generator("cpu").manual_seed(2)).images[0]
    assert np.array_equal(_pixels(klein.adapter.decode(card, latents)[0]), _pixels(expected))


def test_generator_is_seed_and_a_batch_is_each_image_alone(klein: FewStepGenerator) -> None:
    """generator= draws what seed= draws; image k of a batch (num_images, or a prompt list) is seed + k's alone."""
    other = "a blue heron at dawn"
    alone = [klein(PROMPT, seed=5, **SIZE).images[0], klein(PROMPT, seed=6, **SIZE).images[0]]
    by_generator = klein(PROMPT, generator=torch.Generator("cpu").manual_seed(5), **SIZE).images[0]
    assert np.array_equal(_pixels(by_generator), _pixels(alone[0]))
    batch = klein(PROMPT, seed=5, num_images=2, **SIZE)
    listed = klein([PROMPT, other], seed=5, **SIZE).images
    assert batch.seeds == [5, 6] and all(map(_close, batch.images, alone))
    assert _close(listed[0], alone[0]) and _close(listed[1], klein(other, seed=6, **SIZE).images[0])


def test_prompt_embeddings_are_cached(klein: FewStepGenerator) -> None:
    prompt = "a lighthouse at dusk, cached"
    first = klein(prompt, seed=1, **SIZE)
    hits = klein.embedding_cache.hits
    again = klein(prompt, seed=1, **SIZE)
    assert klein.embedding_cache.hits == hits + 1
    assert np.array_equal(_pixels(first.images[0]), _pixels(again.images[0]))
    embeds = klein.encode(prompt, guidance=True)  # a distilled repo runs no CFG: no negative embeddings
    assert set(embeds) == {"prompt_embeds"}
    assert embeds["prompt_embeds"].shape == (1, 512, 48)  # padded to max_sequence_length, 3 layers × 16


@pytest.mark.parametrize(
    ("call", "fix"),
    [
        ({"steps": 2}, r"flux2-klein-4b runs exactly 4 steps .*, got steps=2; use steps=4"),
        ({"height": 72, "width": 64}, r"height=72 is not a multiple of 16 .*: use 64 or 80"),
        ({"height": 64, "width": 100}, r"width=100 is not a multiple of 16"),
        # the pipeline's image= is reference editing: diffusers has no img2img twin to run it as img2img
        ({"image": Image.new("RGB", (64, 64)), **SIZE}, r"no image-to-image pipeline in diffusers; drop image="),
    ],
)
def test_bad_inputs_are_refused_naming_the_fix(call: dict[str, Any], fix: str, klein: FewStepGenerator) -> None:
    with pytest.raises(FastDiffError, match=fix):
        klein(PROMPT, **call)


def test_guidance_warns_naming_the_fix_and_changes_nothing(klein: FewStepGenerator) -> None:
    with pytest.warns(FastDiffWarning, match=r"distilled to run without guidance.*Use guidance_scale=1.0"):
        guided = klein(PROMPT, guidance_scale=4.0, seed=3, **SIZE).images[0]
    assert np.array_equal(_pixels(guided), _pixels(klein(PROMPT, seed=3, **SIZE).images[0]))  # ignored, as diffusers


def test_a_base_model_runs_cfg_against_the_empty_prompt(small_sizes: None) -> None:
    """A non-distilled klein (the Base repos) runs CFG above guidance 1: the adapter then adds the empty prompt's
    embeddings as `negative_prompt_embeds`, as the pipeline encodes them itself."""
    base = tiny_flux2_pipeline(seed=3)
    base.register_to_config(is_distilled=False)
    base.set_progress_bar_config(disable=True)
    gen = FewStepGenerator.from_pipeline(NAME, base)
    assert set(gen.encode(PROMPT, guidance=True)) == {"prompt_embeds", "negative_prompt_embeds"}
    with pytest.warns(FastDiffWarning, match="distilled to run without guidance"):  # the preset is the distilled repo
        got = gen(PROMPT, guidance_scale=4.0, seed=3, **SIZE).images[0]
    generator = torch.Generator("cpu").manual_seed(3)
    expected = base(prompt=PROMPT, guidance_scale=4.0, num_inference_steps=4, generator=generator, **SIZE).images[0]
    assert np.array_equal(_pixels(got), _pixels(expected))
    assert not np.array_equal(_pixels(got), _pixels(gen(PROMPT, seed=3, **SIZE).images[0]))


def test_weights_that_cannot_fit_are_refused_before_loading(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("weights were read")

    monkeypatch.setattr(fastdiff.loading, "available_memory", lambda device: 1024)
    monkeypatch.setattr(Flux2KleinPipeline, "from_pretrained", never)
    with pytest.raises(FastDiffError, match=f"{NAME}: its weights need about .* in float32"):
        FewStepGenerator.from_preset(NAME, device="cpu", cache_dir=hub_cache, local_files_only=True)


def test_the_memory_estimate_reads_a_sharded_text_encoder(tmp_path: Path) -> None:
    """The real repo's Qwen3 comes in shards (model-0000N-of-0000M.safetensors): each is counted, once."""
    whole = save_tiny_pipeline("flux2", tmp_path / "whole", fp16_variant=False)
    sharded = save_tiny_pipeline("flux2", tmp_path / "sharded", fp16_variant=False)
    for file in (sharded / "text_encoder").glob("*.safetensors"):
        file.unlink()
    tiny_flux2_pipeline().text_encoder.save_pretrained(sharded / "text_encoder", max_shard_size="100KB")
    shards = [f.name for f in pipeline_files(sharded, variant=None) if f.parent.name == "text_encoder"]
    assert len(shards) > 1 and all("-of-" in name for name in shards)
    expected = weights_bytes(pipeline_files(whole, variant=None), dtype=torch.bfloat16)
    assert weights_bytes(pipeline_files(sharded, variant=None), dtype=torch.bfloat16) == expected


def test_a_prompt_past_max_sequence_length_warns(klein: FewStepGenerator) -> None:
    long = "snow " * 100  # 500 byte tokens and the chat template's 26: past 512
    with pytest.warns(FastDiffWarning, match=r"Qwen3 tokens with its chat template; .* only the first 512"):
        klein(long, **SIZE)
    within = "snow " * 95  # 475 + 26 tokens: all read
    with pytest.warns() as record:
        klein(within, **SIZE)
    assert not [w for w in record if "tokens" in str(w.message)]


def test_max_level_keeps_the_vae_and_the_cuda_recipe_runs_on_cpu_tensors(
    hub_cache: Path, klein: FewStepGenerator
) -> None:
    """No tiny autoencoder fits FLUX.2's latents (the pipeline reads its VAE's batch-norm statistics): "max" keeps
    the VAE. The CUDA recipe's fused QKV (transformer and VAE) gives the same image on CPU tensors."""
    gen = FewStepGenerator.from_preset(NAME, device="cpu", cache_dir=hub_cache, local_files_only=True, optimize="max")
    assert type(gen.pipeline.vae).__name__ == "AutoencoderKLFlux2" and gen.recipe.engine == "torch"
    expected = klein(PROMPT, seed=4, **SIZE).images[0]
    assert _close(gen(PROMPT, seed=4, **SIZE).images[0], expected)
    recipe = Optimizations.level("default", compile=False).recipe_for("cuda")
    fused = FewStepGenerator.from_pipeline(NAME, klein.pipeline, optimize=recipe)
    assert _close(fused(PROMPT, seed=4, **SIZE).images[0], expected)


def test_a_diffusers_folder_and_from_pipeline_give_the_same_image(tmp_path: Path, small_sizes: None) -> None:
    folder = save_tiny_pipeline("flux2", tmp_path / "klein", seed=3, fp16_variant=False)
    from_folder = FewStepGenerator.from_preset(NAME, source=folder, device="cpu", optimize="none")
    wrapped = FewStepGenerator.from_pipeline(NAME, tiny_flux2_pipeline(seed=3), optimize="none")  # the same level
    call = {"seed": 9, **SIZE}
    # Bit-equal weights, but mmapped files and in-memory tensors can take different oneDNN kernels (seen on an AMD
    # EPYC, family 25): at most 1/255 apart, the parity tolerance.
    difference = _pixels(from_folder(PROMPT, **call).images[0]) - _pixels(wrapped(PROMPT, **call).images[0])
    assert np.abs(difference).max() <= 1


def test_cached_klein_needs_no_download_and_an_uncached_one_is_named(
    hub_cache: Path, tmp_path: Path, no_network: None
) -> None:
    klein = presets.get(NAME)
    check_cached_or_reachable(klein, dtypes=["float32"], cache_dir=hub_cache, local_files_only=True)  # no raise
    with pytest.raises(FastDiffError, match=r"FLUX\.2-klein-4B \(pipeline\)") as raised:
        check_cached_or_reachable(klein, dtypes=["float32"], cache_dir=tmp_path / "empty", local_files_only=True)
    assert "unet/" not in str(raised.value) and f"fastdiff download {NAME}" in str(raised.value)


@pytest.mark.parametrize("fuse", [True, False])
def test_load_lora_on_the_transformer_is_diffusers_lora(fuse: bool, tmp_path: Path, small_sizes: None) -> None:
    """`gen.load_lora` of a klein LoRA (diffusers' `transformer.…lora_A/B` keys) gives the image of the pipeline
    after diffusers' `load_lora_weights`, then `fuse_lora(lora_scale=)` (fused) or `set_adapters` (unfused)."""
    lora = tiny_lora("flux2", tmp_path / "klein_lora.safetensors", seed=5)
    by_diffusers = tiny_flux2_pipeline(seed=3)
    by_diffusers.load_lora_weights(str(tmp_path), weight_name=lora.name, adapter_name="user")
    if fuse:
        by_diffusers.fuse_lora(lora_scale=0.7, adapter_names=["user"])
    else:
        by_diffusers.set_adapters(["user"], adapter_weights=[0.7])
    gen = FewStepGenerator.from_pipeline(NAME, tiny_flux2_pipeline(seed=3))
    plain = gen(PROMPT, seed=9, **SIZE).images[0]
    gen.load_lora(lora, scale=0.7, fuse=fuse)
    expected = FewStepGenerator.from_pipeline(NAME, by_diffusers)(PROMPT, seed=9, **SIZE).images[0]
    got = gen(PROMPT, seed=9, **SIZE).images[0]
    assert np.array_equal(_pixels(got), _pixels(expected)) and not np.array_equal(_pixels(got), _pixels(plain))


def test_generate_and_download_commands(
    hub_cache: Path,
    tmp_path: Path,
    klein: FewStepGenerator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`fastdiff generate` writes the call's image; `fastdiff download` lists the cached repo and no tiny VAE."""
    out = tmp_path / "fox.png"
    flags = ["--cache-dir", str(hub_cache), "--local-files-only", "--device", "cpu", "--optimize", "none"]
    argv = ["generate", PROMPT, "--preset", NAME, *flags, "--seed", "3", "--height", "64", "--width", "64"]
    assert main([*argv, "--output", str(out)]) == 0
    assert np.array_equal(_pixels(Image.open(out).convert("RGB")), _pixels(klein(PROMPT, seed=3, **SIZE).images[0]))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    assert main(["download", NAME, "--dtype", "float32"]) == 0
    assert capsys.readouterr().out.split() == [str(cached_repo_path(hub_cache, REPO))]


# --- serving ------------------------------------------------------------------------------------------------------


@pytest.fixture
def own(load: Any, small_sizes: None) -> FewStepGenerator:
    """A generator of its own (own embedding cache counters) over the session's tiny klein modules."""
    return FewStepGenerator.from_pipeline(NAME, load(NAME).pipeline)


def test_live_frames_are_the_plain_call(own: FewStepGenerator) -> None:
    frames = []
    with LiveSession(own, seed=11, **SIZE) as live:
        for change in ({"prompt": "a red house"}, {"seed": 12}):
            live.update(**change)
            frames.append(live.wait(timeout=30))
    red, seed = frames
    assert np.array_equal(_pixels(red.image), _pixels(own("a red house", seed=11, **SIZE).image))
    assert np.array_equal(_pixels(seed.image), _pixels(own("a red house", seed=12, **SIZE).image))
    assert (seed.seed, seed.steps, seed.guidance_scale) == (12, 4, 1.0)


def test_map_gives_each_prompt_its_own_call(own: FewStepGenerator) -> None:
    prompts = [f"a paper boat, picture {i}" for i in range(3)]
    results = list(own.map(prompts, batch_size=2, progress=False, seed=100, **SIZE))  # 2 + 1
    assert [r.seed for r in results] == [100, 101, 102]
    for prompt, result in zip(prompts, results, strict=True):
        assert _close(result.image, own(prompt, seed=result.seed, **SIZE).image)


def test_batch_command_writes_the_direct_images(
    tmp_path: Path, hub_cache: Path, klein: FewStepGenerator, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_txt(tmp_path / "p.txt", ["a red fox", "a green frog", "a blue bird"])
    out = tmp_path / "out"
    assert run(prompts, out, hub_cache, "--seed", "10", "--batch-size", "2", preset=NAME) == 0
    assert "made 3, skipped 0 (done before), failed 0" in capsys.readouterr().out
    for entry in assert_complete(out, 3):
        assert (entry["preset"], entry["steps"]) == (NAME, 4)
        direct = klein(entry["prompt"], seed=entry["seed"], **SIZE).images[0]
        assert np.abs(pixels(out / entry["file"]) - pixels(direct)).max() <= 1


@pytest.mark.parametrize("max_batch", [4, 1])
def test_many_threads_get_their_own_images(load: Any, small_sizes: None, max_batch: int) -> None:
    """8 threads × 3 calls on one generator (coalescing or taking turns): 0 wrong images, no error."""
    gen = FewStepGenerator.from_pipeline(NAME, load(NAME).pipeline, max_batch=max_batch)
    cases = [(p, seed, n) for p in ("a red bird", "a blue bird") for seed in (0, 1) for n in (1, 2)]
    expected = {case: gen(case[0], seed=case[1], num_images=case[2], **SIZE).images for case in cases}

    def wrong_images(thread: int) -> list[tuple[str, int, int]]:
        picks = np.random.default_rng(thread).integers(len(cases), size=3)
        calls = [(cases[i], gen(cases[i][0], seed=cases[i][1], num_images=cases[i][2], **SIZE)) for i in picks]
        return [case for case, got in calls if not all(map(_close, got.images, expected[case]))]

    with ThreadPoolExecutor(8) as pool:  # an exception in any thread is raised here
        assert [case for wrong in pool.map(wrong_images, range(8)) for case in wrong] == []


def test_presets_table_lists_klein_with_its_licence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{NAME} "))
    assert " 4 " in f" {line} " and "1024x1024" in line and "apache-2.0" in line and "non-commercial" not in line
