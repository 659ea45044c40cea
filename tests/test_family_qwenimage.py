"""Qwen-Image with the Lightning LoRAs behind the same facade: the card's image for each LoRA's step count, img2img,
seeds and generators, batches of prompts of different lengths, cached embeddings, each bad input refused or warned
with its fix, and serving (the live session, `gen.map`, `fastdiff batch`, threads). Tiny random-weight models from
the test hub cache, under the real repo ids and LoRA file names."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.cli import main
from fastdiff.hub import check_cached_or_reachable, download
from fastdiff.memory import pipeline_files, weights_bytes
from fastdiff.serving import LiveSession
from fastdiff.testing import cached_repo_path, tiny_lora, tiny_qwen2_tokenizer, tiny_qwenimage_pipeline

from .cards import QWEN_LIGHTNING_SCHEDULER
from .test_bulk import assert_complete, pixels, run, write_txt
from .test_parity import _card

PRESETS = ["qwen-image-lightning-4step", "qwen-image-lightning-8step"]
PROMPT = "a tiny astronaut hatching from an egg on the moon"
HEIGHT, WIDTH = 64, 96  # multiples of 16 (VAE 8 × patch 2), not square: the packed latents must unpack right
SIZE = {"height": HEIGHT, "width": WIDTH}


@pytest.fixture
def qwen(load: Any, small_sizes: None) -> FewStepGenerator:
    gen: FewStepGenerator = load("qwen-image-lightning-4step")
    return gen


def _card_image(name: str, cache_dir: Path, prompt: Any, *, seed: Any, steps: int, **extra: Any) -> list[Image.Image]:
    """The card's call: true_cfg_scale=1.0, negative_prompt=" ", the LoRA's step count, a CPU generator."""
    pipe, kwargs = _card(name, cache_dir)
    if isinstance(seed, list):
        generator: Any = [torch.Generator("cpu").manual_seed(s) for s in seed]
    else:
        generator = torch.Generator("cpu").manual_seed(seed)
    images: list[Image.Image] = pipe(
        prompt, num_inference_steps=steps, generator=generator, **{**kwargs, **SIZE, **extra}
    ).images
    return images


def _close(a: Image.Image, b: Image.Image) -> bool:
    return bool(np.abs(pixels(a) - pixels(b)).max() <= 1)


def _photo() -> Image.Image:
    x, y = np.meshgrid(np.linspace(0, 255, WIDTH), np.linspace(0, 255, HEIGHT))
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], -1).astype(np.uint8))


def test_tiny_qwenimage_has_the_real_wiring_and_layout(hub_cache: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    pipe, again = tiny_qwenimage_pipeline(seed=1), tiny_qwenimage_pipeline(seed=1)
    assert torch.equal(torch.rand(1), expected)  # the caller's RNG is left alone
    assert torch.equal(pipe.transformer.img_in.weight, again.transformer.img_in.weight)
    assert pipe.vae_scale_factor == 8 and pipe.image_processor.config.vae_scale_factor == 16
    assert pipe.vae.config.z_dim * 4 == pipe.transformer.config.in_channels == 64
    assert len(pipe.vae.config.latents_mean) == len(pipe.vae.config.latents_std) == 16
    assert pipe.text_encoder.config.text_config.hidden_size == pipe.transformer.config.joint_attention_dim
    assert not pipe.transformer.config.guidance_embeds and not pipe.transformer.training
    assert type(pipe.text_encoder).__name__ == "Qwen2_5_VLForConditionalGeneration"
    # the pipeline drops the chat template's first 34 tokens: exactly the template, as with the real tokenizer
    tokenizer = tiny_qwen2_tokenizer()
    template = pipe.prompt_template_encode.format("a cat")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(template).input_ids)
    start = pipe.prompt_template_encode_start_idx
    assert start == 34 and tokens[start - 3 :] == [
        "<|im_start|>",
        "user",
        "Ċ",
        "a",
        "Ġc",
        "a",
        "t",
        *tokens[start + 4 :],
    ]
    snapshot = cached_repo_path(hub_cache, "Qwen/Qwen-Image")
    index = json.loads((snapshot / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "Qwen2_5_VLForConditionalGeneration"]
    assert index["vae"] == ["diffusers", "AutoencoderKLQwenImage"] and index["tokenizer"][1] == "Qwen2Tokenizer"
    scheduler = json.loads((snapshot / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["base_shift"], scheduler["max_shift"], scheduler["shift_terminal"]) == (0.5, 0.9, 0.02)
    lightning = cached_repo_path(hub_cache, "lightx2v/Qwen-Image-Lightning")
    assert sorted(p.name for p in lightning.iterdir()) == [
        "Qwen-Image-Lightning-4steps-V2.0-bf16.safetensors",
        "Qwen-Image-Lightning-8steps-V2.0-bf16.safetensors",
    ]


@pytest.mark.parametrize("name", PRESETS)
def test_lightning_is_the_cards_image(name: str, load: Any, hub_cache: Path, small_sizes: None) -> None:
    """The card: Qwen-Image with its scheduler dict, the LoRA of the step count, true_cfg_scale=1.0."""
    gen = load(name)
    steps = gen.preset.default_steps
    expected = _card_image(name, hub_cache, PROMPT, seed=11, steps=steps)[0]
    got = gen(PROMPT, seed=11, **SIZE).images[0]
    assert got.size == (WIDTH, HEIGHT) and steps == int(name.split("-")[3].removesuffix("step"))
    assert pixels(expected).std() > 5, "a flat reference would prove nothing"
    assert np.array_equal(pixels(got), pixels(expected)), name
    base = FewStepGenerator.from_pipeline(name, tiny_qwenimage_pipeline(seed=0))  # no LoRA
    assert np.abs(pixels(base(PROMPT, seed=11, **SIZE).images[0]) - pixels(got)).max() > 4, "the LoRA is fused"


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_the_cards(name: str, load: Any) -> None:
    gen = load(name)
    preset = gen.preset
    steps = preset.default_steps
    assert (preset.steps, preset.guidance_scale, preset.height, preset.width) == ((steps,), 1.0, 1024, 1024)
    assert (preset.license, preset.variant, preset.repo_id) == ("apache-2.0", None, "Qwen/Qwen-Image")
    assert preset.checkpoint is not None and preset.checkpoint.kind == "lora"
    assert preset.checkpoint.filename == f"Qwen-Image-Lightning-{steps}steps-V2.0-bf16.safetensors"
    config = {k: v for k, v in gen.pipeline.scheduler.config.items() if not k.startswith("_")}
    assert config == QWEN_LIGHTNING_SCHEDULER  # the card's dict, not the repo's (shift_terminal 0.02)
    assert gen.dtype == torch.float32 and gen.pipeline.text_encoder.dtype == torch.float32


@pytest.mark.parametrize("strength", [0.6, 0.2])
def test_img2img_is_the_img2img_pipelines_image(strength: float, qwen: FewStepGenerator, hub_cache: Path) -> None:
    """QwenImageImg2ImgPipeline over the card's modules at the input's own size; at least one step at any
    strength (0.2 of 4 steps runs the last one)."""
    from diffusers import QwenImageImg2ImgPipeline

    pipe, kwargs = _card("qwen-image-lightning-4step", hub_cache)
    card = QwenImageImg2ImgPipeline.from_pipe(pipe)
    card.set_progress_bar_config(disable=True)
    init = _photo()
    expected = card(
        PROMPT,
        image=init,
        strength=strength,
        num_inference_steps=4,
        generator=torch.Generator("cpu").manual_seed(3),
        **kwargs,
        **SIZE,
    ).images[0]
    got = qwen(PROMPT, image=init, strength=strength, seed=3).images[0]
    assert got.size == (WIDTH, HEIGHT) and np.abs(pixels(got) - pixels(expected)).max() <= 1


def test_generator_is_seed_and_a_batch_is_each_image_alone(qwen: FewStepGenerator, hub_cache: Path) -> None:
    alone = [qwen(PROMPT, seed=s, **SIZE).images[0] for s in (5, 6)]
    assert np.array_equal(
        pixels(qwen(PROMPT, generator=torch.Generator("cpu").manual_seed(5), **SIZE).image), pixels(alone[0])
    )
    batch = qwen(PROMPT, seed=5, num_images=2, **SIZE)
    assert batch.seeds == [5, 6] and all(_close(g, e) for g, e in zip(batch.images, alone, strict=True))
    # prompts of different token counts: padded into one call with their masks, as diffusers pads a prompt list
    prompts = ["a red fox", PROMPT + ", in the style of an old photograph"]
    listed = qwen(prompts, seed=7, **SIZE).images
    singles = [qwen(p, seed=7 + i, **SIZE).images[0] for i, p in enumerate(prompts)]
    assert all(_close(g, e) for g, e in zip(listed, singles, strict=True))
    card = _card_image("qwen-image-lightning-4step", hub_cache, prompts, seed=[7, 8], steps=4)
    assert all(_close(g, e) for g, e in zip(listed, card, strict=True))


def test_prompt_embeddings_are_cached(qwen: FewStepGenerator) -> None:
    prompt = "a lighthouse at dusk, cached"
    first = qwen(prompt, seed=1, **SIZE)
    hits = qwen.embedding_cache.hits
    again = qwen(prompt, seed=1, **SIZE)
    assert qwen.embedding_cache.hits == hits + 1 and np.array_equal(pixels(first.image), pixels(again.image))
    embeds = qwen.encode(prompt)
    assert set(embeds) == {"prompt_embeds", "prompt_embeds_mask"}  # no CFG: no negative embeddings
    assert embeds["prompt_embeds"].shape[:2] == embeds["prompt_embeds_mask"].shape  # the prompt's own length
    assert bool(embeds["prompt_embeds_mask"].all())


def test_guidance_runs_true_cfg_and_warns_with_the_fix(qwen: FewStepGenerator, hub_cache: Path) -> None:
    """guidance_scale is the card's true_cfg_scale: above 1 it runs classifier-free guidance against the negative
    prompt (" " when none, as the Qwen-Image card recommends), two transformer passes a step."""
    with pytest.warns(
        FastDiffWarning,
        match=r"without guidance; guidance_scale=3.0 runs true CFG: twice the transformer work.*Use guidance_scale=1.0",
    ):
        got = qwen(PROMPT, guidance_scale=3.0, seed=2, **SIZE).images[0]
    expected = _card_image("qwen-image-lightning-4step", hub_cache, PROMPT, seed=2, steps=4, true_cfg_scale=3.0)[0]
    assert np.abs(pixels(got) - pixels(expected)).max() <= 1
    with pytest.warns(FastDiffWarning, match=r"negative_prompt is ignored at guidance_scale=1.0"):
        qwen(PROMPT, negative_prompt="blurry", seed=2, **SIZE)


def test_bad_inputs_name_the_fix(qwen: FewStepGenerator) -> None:
    with pytest.raises(
        FastDiffError, match=r"runs exactly 4 steps .*got steps=8; for 8 steps use qwen-image-lightning-8step"
    ):
        qwen(PROMPT, steps=8)
    with pytest.raises(FastDiffError, match=r"height=72 is not a multiple of 16 .*: use 64 or 80"):
        qwen(PROMPT, height=72, width=64)
    with pytest.raises(FastDiffError, match=r"width=100 is not a multiple of 16"):
        qwen(PROMPT, height=64, width=100)
    with pytest.raises(FastDiffError, match=r"true_cfg_scale= is a diffusers argument .*pass guidance_scale="):
        qwen(PROMPT, true_cfg_scale=1.0)
    long = "a " * 600  # one token a word with the tiny tokenizer ("a", "Ġa", …)
    with pytest.warns(
        FastDiffWarning, match=r"Qwen2.5-VL tokens; this model reads only the first \d+ \(max_sequence_length=512"
    ):
        qwen(long, seed=0, **SIZE)


def test_float16_is_refused_and_the_accelerators_default_loads_bfloat16(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch, small_sizes: None
) -> None:
    """Qwen-Image's activations overflow float16 (NaN, black images): refused naming bfloat16, the card's dtype, which
    a load without a dtype on CUDA/MPS (float16 there) takes instead; the LoRA fuses in bfloat16."""
    import fastdiff.loading

    load = {"device": "cpu", "cache_dir": hub_cache, "local_files_only": True}
    fix = r"qwenimage models cannot run in float16: .*NaN \(black\) images.*use bfloat16"
    with pytest.raises(FastDiffError, match=fix):
        FewStepGenerator.from_preset("qwen-image-lightning-4step", dtype="float16", **load)
    with pytest.raises(FastDiffError, match=fix):
        FewStepGenerator.from_pipeline("qwen-image-lightning-4step", tiny_qwenimage_pipeline().to(torch.float16))
    monkeypatch.setattr(fastdiff.loading, "resolve_dtype", lambda dtype, device: dtype or torch.float16)
    gen = FewStepGenerator.from_preset("qwen-image-lightning-4step", optimize="none", **load)
    assert gen.dtype == torch.bfloat16 and gen.pipeline.text_encoder.dtype == torch.bfloat16
    assert pixels(gen(PROMPT, seed=0, **SIZE).images[0]).std() > 5  # an image, not NaN


def test_cpu_levels_run_torch_and_keep_the_vae(qwen: FewStepGenerator, hub_cache: Path, small_sizes: None) -> None:
    """ "default" and "max" on the CPU: the torch engine (OpenVINO converts UNets only), and no tiny autoencoder
    (there is none for Qwen-Image's latents); the CUDA recipe's fused QKV, applied to CPU tensors, within 1/255."""
    expected = qwen(PROMPT, seed=4, **SIZE).images[0]
    gen = FewStepGenerator.from_preset(
        "qwen-image-lightning-4step", device="cpu", cache_dir=hub_cache, local_files_only=True, optimize="max"
    )
    assert gen.recipe.engine == "torch" and type(gen.pipeline.vae).__name__ == "AutoencoderKLQwenImage"
    assert _close(gen(PROMPT, seed=4, **SIZE).images[0], expected)
    recipe = Optimizations.level("default", compile=False).recipe_for("cuda")
    fused = FewStepGenerator.from_pipeline("qwen-image-lightning-4step", qwen.pipeline, optimize=recipe)
    assert _close(fused(PROMPT, seed=4, **SIZE).images[0], expected)


@pytest.mark.parametrize("fuse", [True, False])
def test_load_lora_on_the_transformer_is_diffusers_image(fuse: bool, tmp_path: Path, small_sizes: None) -> None:
    """A user's LoRA on top (diffusers' `transformer.…lora_A/B` keys): fused, the image of `load_lora_weights` +
    `fuse_lora(lora_scale=)` + `unload_lora_weights`; unfused, of `set_adapters`."""
    lora = tiny_lora("qwenimage", tmp_path / "style.safetensors", seed=5)
    gen = FewStepGenerator.from_pipeline("qwen-image-lightning-4step", tiny_qwenimage_pipeline(seed=3))
    before = pixels(gen(PROMPT, seed=9, **SIZE).image)
    gen.load_lora(lora, scale=2.0, fuse=fuse)
    after = pixels(gen(PROMPT, seed=9, **SIZE).image)
    reference = FewStepGenerator.from_pipeline("qwen-image-lightning-4step", tiny_qwenimage_pipeline(seed=3))
    pipe = reference.pipeline
    pipe.load_lora_weights(str(tmp_path), weight_name=lora.name, adapter_name="user")
    if fuse:
        pipe.fuse_lora(lora_scale=2.0, adapter_names=["user"])
        pipe.unload_lora_weights()
    else:
        pipe.set_adapters(["user"], adapter_weights=[2.0])
    pipe.set_progress_bar_config(disable=True)
    expected = pixels(
        pipe(PROMPT, true_cfg_scale=1.0, num_inference_steps=4, generator=torch.manual_seed(9), **SIZE).images[0]
    )
    # the tiny transformer moves the image by a few levels: past the 1/255 that parity allows
    assert np.abs(after - expected).max() <= 1 and np.abs(after - before).max() > 4


def test_from_pipeline_takes_a_checkpoint_into_the_transformer(tmp_path: Path, small_sizes: None) -> None:
    """`checkpoint=` on a transformer family's pipeline: the LoRA fused, as `load_lora` fuses it."""
    lora = tiny_lora("qwenimage", tmp_path / "style.safetensors", seed=5)
    gen = FewStepGenerator.from_pipeline("qwen-image-lightning-4step", tiny_qwenimage_pipeline(seed=3), checkpoint=lora)
    reference = FewStepGenerator.from_pipeline("qwen-image-lightning-4step", tiny_qwenimage_pipeline(seed=3))
    reference.load_lora(lora)
    assert np.array_equal(pixels(gen(PROMPT, seed=9, **SIZE).image), pixels(reference(PROMPT, seed=9, **SIZE).image))


def test_cached_lightning_needs_no_download(hub_cache: Path, no_network: None) -> None:
    """`fastdiff download`'s files (the modules model_index names, the tokenizer's files, the LoRA) are all in the
    cache: nothing is fetched."""
    for name in PRESETS:
        preset = presets.get(name)
        check_cached_or_reachable(preset, dtypes=["float32"], cache_dir=hub_cache, local_files_only=True)
        snapshot, lora = download(preset, dtype="float32", cache_dir=hub_cache)
        assert preset.checkpoint is not None and lora.endswith(preset.checkpoint.filename)
        assert (Path(snapshot) / "tokenizer" / "tokenizer_config.json").is_file()


def test_memory_that_cannot_fit_is_refused_before_loading(
    hub_cache: Path, load: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The estimate is every module the repo's model_index names (the Qwen2.5-VL encoder, vision tower included),
    from the safetensors headers; a device without room refuses before diffusers reads a weight."""
    from diffusers import QwenImagePipeline

    import fastdiff.loading

    folder = cached_repo_path(hub_cache, "Qwen/Qwen-Image")
    modules = [
        m for m in load("qwen-image-lightning-4step").pipeline.components.values() if isinstance(m, torch.nn.Module)
    ]
    loaded = sum(t.numel() * 4 for m in modules for t in m.state_dict().values() if t.is_floating_point())
    assert weights_bytes(pipeline_files(folder, variant=None), dtype=torch.float32) == loaded

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("weights were read")

    monkeypatch.setattr(fastdiff.loading, "available_memory", lambda device: 1024)
    monkeypatch.setattr(QwenImagePipeline, "from_pretrained", never)
    with pytest.raises(FastDiffError, match=r"qwen-image-lightning-8step: its weights need about .* GiB in float32"):
        FewStepGenerator.from_preset(
            "qwen-image-lightning-8step", device="cpu", cache_dir=hub_cache, local_files_only=True
        )


def test_live_frames_and_map_are_the_plain_call(qwen: FewStepGenerator) -> None:
    gen = FewStepGenerator.from_pipeline("qwen-image-lightning-4step", qwen.pipeline)
    with LiveSession(gen, seed=11, **SIZE) as live:
        live.update(prompt="a red house")
        red = live.wait(timeout=30)
        live.update(image=_photo(), strength=0.5)
        half = live.wait(timeout=30)
    assert _close(red.image, gen("a red house", seed=11, **SIZE).image)
    assert _close(half.image, gen("a red house", seed=11, image=_photo(), strength=0.5).image)
    prompts = [f"a paper boat, picture {'number ' * i}{i}" for i in range(3)]  # of different lengths
    results = list(gen.map(prompts, batch_size=2, progress=False, seed=100, **SIZE))
    assert [r.seed for r in results] == [100, 101, 102]
    assert all(_close(r.image, gen(p, seed=r.seed, **SIZE).image) for p, r in zip(prompts, results, strict=True))


def test_fastdiff_batch_writes_the_images(tmp_path: Path, hub_cache: Path, qwen: FewStepGenerator) -> None:
    prompts = write_txt(tmp_path / "p.txt", ["a red fox", "a green frog in a pond"])
    out = tmp_path / "out"
    size = ["--height", str(HEIGHT), "--width", str(WIDTH)]
    assert (
        run(prompts, out, hub_cache, "--seed", "10", "--batch-size", "2", *size, preset="qwen-image-lightning-4step")
        == 0
    )
    for entry in assert_complete(out, 2):
        direct = qwen(entry["prompt"], seed=entry["seed"], **SIZE).images[0]
        assert np.abs(pixels(out / entry["file"]) - pixels(direct)).max() <= 1


def test_threads_get_their_own_images(qwen: FewStepGenerator) -> None:
    gen = FewStepGenerator.from_pipeline("qwen-image-lightning-4step", qwen.pipeline, max_batch=4)
    cases = [(p, seed, n) for p in ("a red bird", "a blue bird on a long branch") for seed in (0, 1) for n in (1, 2)]
    expected = {case: gen(case[0], seed=case[1], num_images=case[2], **SIZE) for case in cases}
    wrong: list[Any] = []

    def worker(k: int) -> None:
        for i in range(6):
            case = cases[(k + i) % len(cases)]
            got = gen(case[0], seed=case[1], num_images=case[2], **SIZE)
            wrong.extend(case for a, b in zip(got.images, expected[case].images, strict=True) if not _close(a, b))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [] and gen.stats.calls == len(cases) + 24


def test_fastdiff_generate_writes_the_image(tmp_path: Path, hub_cache: Path, qwen: FewStepGenerator) -> None:
    out = tmp_path / "astronaut.png"
    model = ["--preset", "qwen-image-lightning-4step", "--cache-dir", str(hub_cache), "--local-files-only"]
    call = ["--device", "cpu", "--optimize", "none", "--seed", "3", "--height", str(HEIGHT), "--width", str(WIDTH)]
    assert main(["generate", PROMPT, *model, *call, "--output", str(out)]) == 0
    assert np.abs(pixels(out) - pixels(qwen(PROMPT, seed=3, **SIZE).image)).max() <= 1


def test_presets_table_lists_both_with_their_licence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in PRESETS:
        line = next(line for line in lines if line.startswith(name + " "))
        assert presets.get(name).steps_label() in line and "1024x1024" in line and "apache-2.0" in line
