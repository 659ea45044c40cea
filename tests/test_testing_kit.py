"""The testing kit itself: tiny pipelines, the fake hub cache and single files behave like the real thing."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache
from safetensors import safe_open
from safetensors.torch import load_file

from fastdiff.testing import (
    SCHEDULER_CONFIGS,
    cached_repo_path,
    make_hf_cache,
    save_single_file,
    save_tiny_pipeline,
    tiny_lora,
    tiny_pipeline,
    tiny_tokenizer,
    tiny_unet,
    tiny_unet_checkpoint,
)

# torch's Tensor.__array__ lacks numpy 2's `copy` keyword; diffusers' Euler set_timesteps calls np.array(tensor).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning")

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
MODELS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    presets = [
        "sdxl-turbo",
        "sd15",
        "lcm-lora-sd15",
        "sdxl-lightning-4step",
        "sdxl-lightning-4step-lora",
        "dmd2-sdxl-4step",
    ]
    return make_hf_cache(tmp_path_factory.mktemp("hub"), presets)


def _generate(pipe: Any, size: int = 64, steps: int = 2, prompt: str = "a red fox") -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)  # Euler ancestral draws noise at every step
    kw = {"height": size, "width": size, "num_inference_steps": steps, "guidance_scale": 0.0, "generator": generator}
    out = pipe(prompt, output_type="np", **kw)
    return np.asarray(out.images)


def _unet_out(unet: Any) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    extra = {}
    if unet.config.addition_embed_type == "text_time":
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.ones(1, 6)}}
    with torch.no_grad():
        return unet(x, 500, text, **extra).sample  # type: ignore[no-any-return]


def _assert_same_weights(a: Any, b: Any, names: tuple[str, ...]) -> None:
    for name in names:
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_tokenizer_is_byte_level_with_eos_last() -> None:
    tok = tiny_tokenizer()
    ids = tok("a cat").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id == len(tok) - 1
    assert len(ids) == 2 + len("a cat") - 1  # one token per character, the space folded into "a</w>"
    assert len(tok("word " * 200, truncation=True, max_length=tok.model_max_length).input_ids) == 77
    assert tiny_tokenizer(pad_token="!").pad_token == "!"


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_tiny_pipelines_generate_finite_images(family: str) -> None:
    pipe = tiny_pipeline(family)  # type: ignore[arg-type]
    assert pipe.vae_scale_factor == 8 and not pipe.unet.training
    image = _generate(pipe)
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all() and image.std() > 0.02
    assert np.array_equal(_generate(pipe), image)  # deterministic in the seed
    assert np.abs(_generate(pipe, prompt="a blue boat") - image).max() > 0.01  # the prompt reaches the image


def test_weights_follow_the_seed_and_leave_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = tiny_pipeline("sd1", seed=1), tiny_pipeline("sd1", seed=1), tiny_pipeline("sd1", seed=2)
    assert torch.equal(torch.rand(1), expected)
    _assert_same_weights(a, b, ("unet", "vae", "text_encoder"))
    assert not torch.equal(a.unet.conv_in.weight, c.unet.conv_in.weight)
    unet = a.unet.state_dict()  # tiny_unet(seed) is the pipeline's UNet: the base of checkpoints and LoRAs
    assert all(torch.equal(v, unet[k]) for k, v in tiny_unet("sd1", seed=1).state_dict().items())


def test_family_wiring() -> None:
    sd2, sdxl = tiny_pipeline("sd2"), tiny_pipeline("sdxl")
    assert sd2.unet.config.use_linear_projection and sd2.tokenizer.pad_token == "!"
    assert (
        type(sd2.scheduler).__name__ == "EulerDiscreteScheduler" and sd2.scheduler.config.timestep_spacing == "trailing"
    )
    assert sdxl.vae.config.force_upcast and sdxl.vae.config.scaling_factor == 0.13025
    assert sdxl.tokenizer_2.pad_token == "!" and sdxl.text_encoder_2.config.projection_dim == 32
    custom = tiny_pipeline("sdxl", scheduler_config=SCHEDULER_CONFIGS["stabilityai/sdxl-turbo"])
    assert type(custom.scheduler).__name__ == "EulerAncestralDiscreteScheduler"


def test_save_tiny_pipeline_ships_fp16_variants(tmp_path: Path) -> None:
    root = save_tiny_pipeline("sdxl", tmp_path / "pipe", seed=3)
    for name in MODELS:
        half = next((root / name).glob("*.fp16.safetensors"))
        with safe_open(str(half), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
    assert (root / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    full = DiffusionPipeline.from_pretrained(root)
    half_pipe = DiffusionPipeline.from_pretrained(root, variant="fp16", dtype=torch.float16)
    assert full.unet.dtype == torch.float32 and half_pipe.unet.dtype == torch.float16
    _assert_same_weights(full, tiny_pipeline("sdxl", seed=3), MODELS)


def test_hf_cache_layout(cache: Path) -> None:
    repo = cache / "models--stabilityai--sdxl-turbo"
    commit = (repo / "refs" / "main").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    snapshot = cached_repo_path(cache, "stabilityai/sdxl-turbo")
    assert snapshot == repo / "snapshots" / commit
    weights = snapshot / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.is_symlink() and not os.path.isabs(os.readlink(weights))
    assert weights.resolve().parent == (repo / "blobs").resolve() and len(weights.resolve().name) == 64  # sha256
    assert len((snapshot / "model_index.json").resolve().name) == 40  # git blob sha1 for non-LFS files
    assert snapshot_download("stabilityai/sdxl-turbo", cache_dir=cache, local_files_only=True) == str(snapshot)
    lora = hf_hub_download("ByteDance/SDXL-Lightning", "sdxl_lightning_4step_lora.safetensors", cache_dir=cache)
    assert Path(lora).is_file()
    assert isinstance(try_to_load_from_cache("tianweiy/DMD2", "dmd2_sdxl_4step_unet_fp16.bin", cache_dir=cache), str)
    assert try_to_load_from_cache("tianweiy/DMD2", "dmd2_sdxl_1step_unet_fp16.bin", cache_dir=cache) is None


@pytest.mark.parametrize(
    ("repo_id", "cls", "scheduler", "spacing"),
    [
        ("stabilityai/sdxl-turbo", StableDiffusionXLPipeline, "EulerAncestralDiscreteScheduler", "trailing"),
        (SDXL_BASE, StableDiffusionXLPipeline, "EulerDiscreteScheduler", "leading"),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", StableDiffusionPipeline, "PNDMScheduler", "leading"),
    ],
)
def test_cached_repos_load_offline(cache: Path, repo_id: str, cls: type, scheduler: str, spacing: str) -> None:
    pipe = DiffusionPipeline.from_pretrained(repo_id, cache_dir=cache, local_files_only=True)
    assert type(pipe) is cls and type(pipe.scheduler).__name__ == scheduler
    assert pipe.scheduler.config.timestep_spacing == spacing
    half = DiffusionPipeline.from_pretrained(
        repo_id, cache_dir=cache, local_files_only=True, variant="fp16", dtype=torch.float16
    )
    assert half.unet.dtype == torch.float16 and half.text_encoder.dtype == torch.float16


def test_cache_is_deterministic_and_files_differ(cache: Path, tmp_path: Path) -> None:
    again = make_hf_cache(tmp_path, ["sdxl-lightning-4step"])
    for repo_id in (SDXL_BASE, "ByteDance/SDXL-Lightning"):
        assert cached_repo_path(again, repo_id).name == cached_repo_path(cache, repo_id).name
    name = "sdxl_lightning_4step_unet.safetensors"
    a, b = (load_file(cached_repo_path(c, "ByteDance/SDXL-Lightning") / name) for c in (cache, again))
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(cached_repo_path(cache, SDXL_BASE) / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == base.keys() and not torch.equal(a["conv_in.weight"].float(), base["conv_in.weight"])
    assert {v.dtype for v in a.values()} == {torch.float16}  # like the real Lightning and DMD2 files
    other = load_file(
        cached_repo_path(cache, "stabilityai/sdxl-turbo") / "unet" / "diffusion_pytorch_model.safetensors"
    )
    assert not torch.equal(other["conv_in.weight"], base["conv_in.weight"])


def test_unet_checkpoints(tmp_path: Path, cache: Path) -> None:
    path = tiny_unet_checkpoint("sd1", tmp_path / "unet.bin", seed=5, pickle=True)
    state = torch.load(path, weights_only=True)
    unet = tiny_unet("sd1")
    before = _unet_out(unet)
    unet.load_state_dict(state)  # strict: same keys and shapes
    assert not torch.allclose(before, _unet_out(unet))
    dmd2 = try_to_load_from_cache("tianweiy/DMD2", "dmd2_sdxl_4step_unet_fp16.bin", cache_dir=cache)
    assert isinstance(dmd2, str)
    assert torch.load(dmd2, weights_only=True).keys() == tiny_unet("sdxl").state_dict().keys()


def test_lora_changes_the_unet_once_fused(tmp_path: Path) -> None:
    path = tiny_lora("sdxl", tmp_path / "sdxl_lightning_4step_lora.safetensors", seed=1)
    assert path.name == "sdxl_lightning_4step_lora.safetensors"
    pipe = tiny_pipeline("sdxl")
    before = _unet_out(pipe.unet)
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # fused weights stay
    after = _unet_out(pipe.unet)
    assert (before - after).abs().mean() > 1e-2 * before.abs().mean()


def test_lora_from_cache_loads_into_sd15(cache: Path) -> None:
    sd15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    pipe = DiffusionPipeline.from_pretrained(sd15, cache_dir=cache, local_files_only=True)
    before = _unet_out(pipe.unet)
    # offline, diffusers cannot list the repo to guess the file: weight_name is required
    pipe.load_lora_weights(
        "latent-consistency/lcm-lora-sdv1-5",
        weight_name="pytorch_lora_weights.safetensors",
        cache_dir=cache,
        local_files_only=True,
    )
    pipe.fuse_lora()
    assert not torch.allclose(before, _unet_out(pipe.unet))


def test_single_file_sdxl_round_trip_via_cached_repo(cache: Path, tmp_path: Path) -> None:
    # weights unlike those of the cached sdxl-turbo repo, which only gives the configs, tokenizers and scheduler
    pipe = tiny_pipeline("sdxl", seed=42, scheduler_config=SCHEDULER_CONFIGS["stabilityai/sdxl-turbo"])
    path = save_single_file(pipe, tmp_path / "sd_xl_turbo_1.0_fp16.safetensors")
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in keys
    assert (
        "model.diffusion_model.label_emb.0.0.weight" in keys
        and "first_stage_model.decoder.up.0.block.0.conv1.weight" in keys
    )
    loaded = StableDiffusionXLPipeline.from_single_file(
        str(path), config="stabilityai/sdxl-turbo", cache_dir=cache, local_files_only=True
    )
    _assert_same_weights(pipe, loaded, MODELS)
    assert type(loaded.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    # safetensors' memory-mapped tensors are aligned differently, hence last-bit differences
    np.testing.assert_allclose(_generate(loaded), _generate(pipe), atol=1e-5)


@pytest.mark.parametrize(
    ("family", "text_key"), [("sd1", "cond_stage_model.transformer."), ("sd2", "cond_stage_model.model.")]
)
def test_single_file_sd_round_trip_via_folder(tmp_path: Path, family: str, text_key: str) -> None:
    config = save_tiny_pipeline(family, tmp_path / "config", seed=1, fp16_variant=False)  # type: ignore[arg-type]
    pipe = tiny_pipeline(family, seed=9)  # type: ignore[arg-type]
    path = save_single_file(pipe, tmp_path / "model.safetensors", dtype=torch.float16)
    with safe_open(str(path), "pt") as f:
        assert any(k.startswith(text_key) for k in f.keys())  # noqa: SIM118
    loaded = StableDiffusionPipeline.from_single_file(str(path), config=str(config), local_files_only=True)
    _assert_same_weights(pipe.to(torch.float16), loaded.to(torch.float16), ("unet", "vae", "text_encoder"))
    assert isinstance(loaded.unet, UNet2DConditionModel)
