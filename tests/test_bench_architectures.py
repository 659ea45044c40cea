"""The real architectures (checked by parameter count, built on meta: no memory) and the random-weight builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from fastdiff.bench import random_weights
from fastdiff.bench.architectures import ARCHITECTURES, Architecture, architecture, tiny_architecture
from fastdiff.bench.random_weights import (
    NotEnoughMemory,
    _materialize,
    _parameters_on_meta,
    meta_modules,
    parameter_shapes,
    pipeline_from,
    random_components,
)
from fastdiff.configs.tokenizer import byte_level_tokenizer, word_level_tokenizer
from fastdiff.errors import FastDiffError
from fastdiff.presets import (
    FLUX2_KLEIN_4B_REPO,
    FLUX_SCHNELL_REPO,
    SD15_REPO,
    SD35_LARGE_TURBO_REPO,
    SD_TURBO_REPO,
    SDXL_BASE_REPO,
    SDXL_TURBO_REPO,
    Z_IMAGE_TURBO_REPO,
)

CLIP_L, SD_VAE = 123_060_480, 83_653_863


# Parameter counts of the published checkpoints (diffusers / transformers layouts), built on meta: no memory.
@pytest.mark.parametrize(
    ("repo", "counts"),
    [
        (SD15_REPO, {"unet": 859_520_964, "text_encoder": CLIP_L, "vae": SD_VAE}),
        (SDXL_BASE_REPO, {"unet": 2_567_463_684, "text_encoder": CLIP_L, "text_encoder_2": 694_659_840, "vae": SD_VAE}),
        (SD_TURBO_REPO, {"unet": 865_910_724, "text_encoder": 340_387_840, "vae": SD_VAE}),
        # FLUX.1's 12B transformer, CLIP-L and the T5-XXL encoder (its token embedding shared, counted once)
        (
            FLUX_SCHNELL_REPO,
            {"transformer": 11_891_178_560, "text_encoder": CLIP_L, "text_encoder_2": 4_762_310_656, "vae": 83_819_683},
        ),
        # SD 3.5 Large (Turbo): the 8.06B MMDiT (shared/reference counts 8,056,627,520 from its config), CLIP-L with
        # its projection, OpenCLIP-G (as SDXL's), the same T5-XXL encoder and 16-channel VAE as FLUX.1
        (
            SD35_LARGE_TURBO_REPO,
            {
                "transformer": 8_056_627_520,
                "text_encoder": CLIP_L + 768 * 768,
                "text_encoder_2": 694_659_840,
                "text_encoder_3": 4_762_310_656,
                "vae": 83_819_683,
            },
        ),
        # FLUX.2 [klein] 4B: shared/reference counts 3,875,544,576 for its transformer; Qwen3-4B 4,022,468,096 (the
        # count of a copy's safetensors in z-image-turbo's README), the same encoder as Z-Image-Turbo's
        (
            FLUX2_KLEIN_4B_REPO,
            {"transformer": 3_875_544_576, "text_encoder": 4_022_468_096, "vae": 84_046_115},
        ),
        # Z-Image-Turbo: the "6B" S3-DiT (its bf16 single file of 12.3 GB is ~6.15B), Qwen3-4B, FLUX.1's VAE
        (
            Z_IMAGE_TURBO_REPO,
            {"transformer": 6_154_908_736, "text_encoder": 4_022_468_096, "vae": 83_819_683},
        ),
    ],
)
def test_architectures_have_the_real_parameter_counts(repo: str, counts: dict[str, int]) -> None:
    modules = meta_modules(ARCHITECTURES[repo])
    assert all(p.is_meta for module in modules.values() for p in module.parameters())
    assert {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()} == counts
    assert ARCHITECTURES[repo].denoiser == next(iter(counts))


def test_turbo_and_base_share_modules() -> None:
    """The bench builds modules once and shares them where the shapes agree: SDXL-Turbo's and SDXL base's do."""

    def shapes(repo: str) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
        return parameter_shapes(meta_modules(ARCHITECTURES[repo]))

    assert shapes(SDXL_TURBO_REPO) == shapes(SDXL_BASE_REPO)
    assert shapes(SD15_REPO) != shapes(SD_TURBO_REPO)
    assert ARCHITECTURES[SDXL_TURBO_REPO].config("unet")["sample_size"] == 64  # 512 px
    assert ARCHITECTURES[SDXL_BASE_REPO].config("unet")["sample_size"] == 128  # 1024 px


def _small_clip() -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408
    )


def test_materialize_fills_every_parameter_and_keeps_buffers() -> None:
    with _parameters_on_meta():
        first, second = CLIPTextModel(_small_clip()), CLIPTextModel(_small_clip())
    _materialize([first], device=torch.device("cpu"), dtype=torch.float32, seed=0)
    _materialize([second], device=torch.device("cpu"), dtype=torch.float32, seed=0)
    params = list(first.parameters())
    assert params and not any(p.is_meta for p in params)
    # The promise: every weight N(0, 0.02²), the std of a GPT-2/CLIP init (the token embedding: 49408 × 32 values).
    weights = torch.cat([p.flatten() for p in params])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.01)
    for p in params:
        if p.numel() >= 1024:  # per layer too: a tensor of 1024 draws has its std within ±10 % at 4 sigma
            assert abs(p.mean().item()) < 0.003 and p.std().item() == pytest.approx(0.02, rel=0.1), p.shape
    assert all(torch.equal(a, b) for a, b in zip(params, second.parameters(), strict=True))  # deterministic in the seed
    heads = [tuple(p.flatten()[:8].tolist()) for p in params if p.numel() >= 8]
    assert len(set(heads)) == len(heads)  # no two tensors share values: each starts at its own place in the pool
    with _parameters_on_meta():
        other = CLIPTextModel(_small_clip())
    _materialize([other], device=torch.device("cpu"), dtype=torch.float32, seed=1)
    assert not torch.equal(next(other.parameters()), params[0])  # another seed, other weights
    position_ids = next(b for name, b in first.named_buffers() if name.endswith("position_ids"))
    assert torch.equal(position_ids, torch.arange(77).unsqueeze(0))


def test_code_made_tokenizer_stays_inside_the_real_vocabulary() -> None:
    ids = byte_level_tokenizer()("ÿ a photo, of ~everything~ ✓", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and max(ids) < 49408


def test_word_level_tokenizer_counts_words_and_wraps_chats() -> None:
    """T5's, Gemma's and Qwen's stand-in: a token per word, as many as their BPEs make give or take, any vocabulary."""
    tokenizer = word_level_tokenizer()
    chat = [{"role": "user", "content": "a photo of an astronaut, riding"}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    answer = "<|im_start|>assistant\n<think>\n\n</think>\n\n"  # Qwen3's empty thinking block, as FLUX.2 asks
    assert text == "<|im_start|>user\na photo of an astronaut, riding<|im_end|>\n" + answer
    assert len(tokenizer(text).input_ids) == 14  # the chat markers are one token each
    padded = tokenizer("a photo", padding="max_length", max_length=8, truncation=True).input_ids
    assert padded == [2, 2] + [tokenizer.pad_token_id] * 6 and max(padded) < 5


def _small_sdxl() -> Any:
    """SDXL wiring at toy widths, with the real vocabulary size."""
    return tiny_architecture(ARCHITECTURES[SDXL_TURBO_REPO])


def test_random_components_make_a_working_pipeline() -> None:
    arch = _small_sdxl()
    parts = random_components(arch, device=torch.device("cpu"), dtype=torch.float32)
    assert parts["text_encoder"].config.vocab_size == 49408
    pipe = pipeline_from(arch, parts)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    image = pipe("a cat", num_inference_steps=1, guidance_scale=0.0, height=64, width=64).images[0]
    assert image.size == (64, 64)


@pytest.mark.parametrize("mapped", [False, True])
def test_a_transformer_family_builds_from_its_configs_alone(tmp_path: Path, mapped: bool) -> None:
    """FLUX.1 [schnell] from its shipped configs at toy widths: the T5 encoder's tied embedding stays one tensor,
    in memory and memory-mapped (written once, under its first name)."""
    arch = tiny_architecture(ARCHITECTURES[FLUX_SCHNELL_REPO])
    assert arch.config("transformer")["joint_attention_dim"] == arch.config("text_encoder_2")["d_model"] == 64
    assert arch.config("transformer")["pooled_projection_dim"] == arch.config("text_encoder")["hidden_size"] == 12
    folder = tmp_path if mapped else None
    parts = random_components(arch, device=torch.device("cpu"), dtype=torch.float32, folder=folder)
    t5 = parts["text_encoder_2"]
    tied = t5.encoder.embed_tokens.weight
    assert tied.data_ptr() == t5.shared.weight.data_ptr() and not tied.is_meta  # one tensor (mapped: one file's)
    if mapped:
        again = random_components(arch, device=torch.device("cpu"), dtype=torch.float32)
        assert torch.equal(again["text_encoder_2"].shared.weight, t5.shared.weight)
    pipe = pipeline_from(arch, parts)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "FluxPipeline" and type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    image = pipe(prompt="a cat", num_inference_steps=2, guidance_scale=0.0, height=64, width=64, max_sequence_length=32)
    assert image.images[0].size == (64, 64)


# A family the bench has no code for, told by its configs alone: SANA-Sprint 0.6B's transformer, its Gemma 2 text
# encoder and deep-compression VAE, its SCM scheduler (shared/reference/model-configs/sana-sprint-0.6b).
_SANA_SPRINT = Architecture(
    repo_id="example/sana-sprint",
    pipeline="SanaSprintPipeline",
    modules={
        "transformer": ("diffusers", "SanaTransformer2DModel", {
            "attention_head_dim": 32, "caption_channels": 2304, "cross_attention_dim": 1152,
            "cross_attention_head_dim": 72, "guidance_embeds": True, "guidance_embeds_scale": 0.1, "in_channels": 32,
            "mlp_ratio": 2.5, "norm_elementwise_affine": False, "norm_eps": 1e-6, "num_attention_heads": 36,
            "num_cross_attention_heads": 16, "num_layers": 28, "out_channels": 32, "patch_size": 1,
            "qk_norm": "rms_norm_across_heads", "sample_size": 32, "timestep_scale": 1.0,
        }),
        "text_encoder": ("transformers", "Gemma2Model", {
            "model_type": "gemma2", "head_dim": 256, "hidden_size": 2304, "intermediate_size": 9216,
            "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4, "vocab_size": 256000,
        }),
        "vae": ("diffusers", "AutoencoderDC", {
            "attention_head_dim": 32, "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
            "decoder_block_types": ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3, "decoder_layers_per_block": [3] * 6,
            "decoder_norm_types": "rms_norm", "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
            "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
            "encoder_block_types": ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
            "encoder_layers_per_block": [2, 2, 2, 3, 3, 3], "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
            "latent_channels": 32, "scaling_factor": 0.41407, "upsample_block_type": "interpolate",
        }),
    },
    tokenizers={"tokenizer": ("GemmaTokenizerFast", "<pad>")},
    scheduler={"_class_name": "SCMScheduler", "prediction_type": "trigflow", "sigma_data": 0.5},
    flags={},
    tiny_vae={},
)  # fmt: skip


def test_a_family_new_to_the_bench_builds_at_toy_widths() -> None:
    arch = tiny_architecture(_SANA_SPRINT)
    transformer = arch.config("transformer")
    assert (transformer["num_layers"], transformer["num_attention_heads"], transformer["attention_head_dim"]) == (
        1,
        2,
        32,
    )
    assert transformer["cross_attention_dim"] == 64 == 2 * transformer["cross_attention_head_dim"]  # heads × width
    assert transformer["caption_channels"] == arch.config("text_encoder")["hidden_size"] == 36
    assert arch.config("text_encoder")["num_hidden_layers"] == 26  # depth kept
    pipe = pipeline_from(arch, random_components(arch, device=torch.device("cpu"), dtype=torch.float32, seed=3))
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "SCMScheduler"
    image = pipe(prompt="a cat", num_inference_steps=2, height=64, width=64, output_type="np").images
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()


def _mapped_file(address: int) -> str | None:
    """The file mapped at `address` in this process (/proc/self/maps), if any."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *_, path = line.split(maxsplit=5) if line.count(" ") >= 5 else [*line.split(), ""]
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= address < high:
            return path.strip() or None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc/self/maps")
def test_random_weights_in_a_folder_are_written_once_and_memory_mapped(tmp_path: Path) -> None:
    arch, cpu = _small_sdxl(), torch.device("cpu")
    first = random_components(arch, device=cpu, dtype=torch.float32, folder=tmp_path)
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == 4 and not list(tmp_path.glob("*.part"))  # UNet, VAE, both text encoders
    written = {f: f.stat().st_mtime_ns for f in files}
    again = random_components(arch, device=cpu, dtype=torch.float32, folder=tmp_path)
    assert {f: f.stat().st_mtime_ns for f in files} == written  # read, not written again
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = first[name].state_dict(), again[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert all(p.device.type == "cpu" and not p.requires_grad for p in again[name].parameters())
    in_memory = random_components(arch, device=cpu, dtype=torch.float32)  # the same weights, not memory-mapped
    assert all(torch.equal(p, q) for p, q in zip(in_memory["vae"].parameters(), again["vae"].parameters(), strict=True))
    weight = again["unet"].conv_in.weight
    assert weight.abs().sum() > 0
    assert _mapped_file(weight.data_ptr()) in {str(f) for f in files}  # the file's pages, not a copy
    pipe = pipeline_from(arch, again)
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a cat", num_inference_steps=1, guidance_scale=0.0, height=64, width=64).images[0].size == (64, 64)


def test_too_large_for_memory_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random_weights, "available_memory", lambda device: 1000)
    with pytest.raises(NotEnoughMemory, match="GiB free"):
        random_components(_small_sdxl(), device=torch.device("cpu"), dtype=torch.float32)


def test_every_shipped_config_is_package_data() -> None:
    """An installed wheel holds what `fastdiff.configs` reads: pyproject's package-data globs match every file."""
    import glob

    import tomllib

    import fastdiff

    package = Path(fastdiff.__file__).parent
    pyproject = tomllib.loads((package.parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["fastdiff"]
    shipped = {path for pattern in globs for path in glob.glob(pattern, root_dir=package)}
    configs = {str(p.relative_to(package)) for p in (package / "configs").rglob("*") if p.suffix in (".json", ".md")}
    assert len(configs) > 20 and configs <= shipped


def test_a_repo_without_shipped_configs_names_the_fix() -> None:
    with pytest.raises(
        FastDiffError, match=r"ship its model_index.json and every module's config.json.*FLUX.1-schnell"
    ):
        architecture("black-forest-labs/FLUX.1-dev")


def test_the_unet_only_fields_still_read_with_a_deprecation_warning() -> None:
    arch = ARCHITECTURES[SDXL_TURBO_REPO]
    with pytest.warns(DeprecationWarning, match=r"Architecture\.unet is deprecated"):
        assert arch.unet == arch.config("unet")
    with pytest.warns(DeprecationWarning):
        assert arch.vae == arch.config("vae")
    with pytest.warns(DeprecationWarning):
        assert arch.text_encoders == (arch.config("text_encoder"), arch.config("text_encoder_2"))
    with pytest.warns(DeprecationWarning):
        assert arch.pad_tokens == ("<|endoftext|>", "!")  # CLIP-L's EOS, OpenCLIP's "!"
