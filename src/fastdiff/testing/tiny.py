"""Tiny random-weight SD 1.x / SD 2.x / SDXL pipelines built in code, for tests that can download nothing.

Each family keeps the wiring of the real model (VAE scale factor 8, 4 latent channels, SDXL's two text encoders
and micro-conditioning, SD 2's linear projections) with a few dozen channels, so a 64x64 image takes tens of
milliseconds on a CPU. Weights are a pure function of `seed`, and `tiny_unet(f, seed=s)` is the UNet of
`tiny_pipeline(f, seed=s)`: checkpoints and LoRAs built on `base_seed` fit the pipeline built with that seed.
"""

from __future__ import annotations

import importlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from ..configs.tokenizer import BOS, EOS, byte_vocab
from ..configs.tokenizer import byte_level_tokenizer as tiny_tokenizer
from ..families import FAMILIES
from ..presets import Family
from .repo_configs import SCHEDULER_CONFIGS

__all__ = [
    "save_tiny_pipeline",
    "tiny_autoencoder_tiny",
    "tiny_lora",
    "tiny_pipeline",
    "tiny_tokenizer",
    "tiny_unet",
    "tiny_unet_checkpoint",
]

# UNets: the real wiring (no attention on the first level, SDXL's text-time embedding, SD 2's linear projections)
# on three levels of 16-64 channels, one layer each: a 1024² SDXL step stays well under a second on a CPU.
_UNET_COMMON: dict[str, Any] = {
    "block_out_channels": (16, 32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}
_UNET: dict[str, dict[str, Any]] = {
    "sd1": {**_UNET_COMMON, "sample_size": 64, "cross_attention_dim": 32, "attention_head_dim": 2},
    "sd2": {
        **_UNET_COMMON,
        "sample_size": 64,
        "cross_attention_dim": 32,
        "attention_head_dim": (2, 2, 4),
        "use_linear_projection": True,
    },
    "sdxl": {
        **_UNET_COMMON,
        "sample_size": 128,
        "cross_attention_dim": 96,  # text_encoder (32) + text_encoder_2 (64) hidden states, concatenated
        "attention_head_dim": (2, 2, 4),
        "use_linear_projection": True,
        "transformer_layers_per_block": (1, 1, 2),
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,  # 6 time ids x 8 + text_encoder_2's pooled projection (32)
    },
}

# VAEs: four levels like the real ones, so that the VAE scale factor is 8; the full-resolution level is the
# narrowest because it dominates the time of a 1024² decode.
_VAE_COMMON: dict[str, Any] = {
    "block_out_channels": (4, 8, 16, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
}
_VAE: dict[str, dict[str, Any]] = {
    "sd1": {**_VAE_COMMON, "sample_size": 512},
    "sd2": {**_VAE_COMMON, "sample_size": 768},
    "sdxl": {**_VAE_COMMON, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
}

# CLIP-L (SD 1, SDXL's first encoder) uses quick_gelu, OpenCLIP (SD 2, SDXL's second) gelu. SDXL's two encoders
# must differ in width: diffusers' single-file loader tells them apart by the width of their position embedding.
_CLIP_L: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 37, "hidden_act": "quick_gelu"}
_OPEN_CLIP: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 37, "hidden_act": "gelu"}
_OPEN_CLIP_BIGG: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 80, "hidden_act": "gelu"}


def _text_config(arch: dict[str, Any], pad_token: str) -> CLIPTextConfig:
    vocab = byte_vocab()
    return CLIPTextConfig(
        **arch,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(vocab),
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[pad_token],
    )


def _check(family: str) -> None:
    if family not in _UNET:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(_UNET)}")


# A transformer family's tiny pipeline lives in its own module of this package (built on the helpers here), which
# defines `tiny_pipeline(*, seed, scheduler_config)` and `MODEL_INDEX` (the repo's own model_index.json, or None).
# A new family is one entry here.
_TRANSFORMER_KITS: dict[str, str] = {
    "flux": "tiny_flux",
    "flux2": "tiny_flux2",
    "zimage": "tiny_zimage",
    "sd3": "tiny_sd3",
    "qwenimage": "tiny_qwenimage",
    "sana-sprint": "tiny_sana_sprint",
}


def _transformer_kit(family: str) -> Any:
    """The test-kit module of a transformer `family`; None for the UNet families built in this module."""
    name = _TRANSFORMER_KITS.get(family)
    return None if name is None else importlib.import_module(f".{name}", __package__)


def tiny_unet(family: Family, *, seed: int = 0) -> UNet2DConditionModel:
    """The tiny UNet of `family` with weights drawn from `seed` (the same as `tiny_pipeline`'s)."""
    _check(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet: UNet2DConditionModel = UNet2DConditionModel(**_UNET[family])
    unet.eval()  # as from_pretrained leaves it
    return unet


def tiny_autoencoder_tiny(*, seed: int = 0, latent_channels: int = 4) -> Any:
    """TAESD's layout (diffusers' `AutoencoderTiny`) with 8 channels: a stand-in for `optimize="max"`'s decoder
    (`latent_channels=16`: TAEF1's, for FLUX)."""
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae: Any = AutoencoderTiny(  # type: ignore[no-untyped-call]
            encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4, latent_channels=latent_channels
        )
    return vae.eval()


def _scheduler(family: Family, config: dict[str, Any] | None) -> SchedulerMixin:
    config = config if config is not None else SCHEDULER_CONFIGS[FAMILIES[family].base_repo]  # the base model's
    cls: Any = getattr(diffusers, config["_class_name"])
    scheduler: SchedulerMixin = cls.from_config(config)
    return scheduler


def _components(family: Family) -> dict[str, Any]:
    """Every component of the pipeline, drawn from the current RNG state in a fixed order, the UNet first."""
    unet = UNet2DConditionModel(**_UNET[family])
    vae = AutoencoderKL(**_VAE[family])
    if family != "sdxl":
        pad = EOS if family == "sd1" else "!"  # SD 2 (OpenCLIP) pads with "!", SD 1 (CLIP) with EOS
        arch = _CLIP_L if family == "sd1" else _OPEN_CLIP
        text_encoder = CLIPTextModel(_text_config(arch, pad))
        return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tiny_tokenizer(pad_token=pad)}
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": CLIPTextModel(_text_config(_CLIP_L, EOS)),
        "text_encoder_2": CLIPTextModelWithProjection(_text_config(_OPEN_CLIP_BIGG, "!")),
        "tokenizer": tiny_tokenizer(),
        "tokenizer_2": tiny_tokenizer(pad_token="!"),  # as in the real SDXL repos
    }


def tiny_pipeline(
    family: Family, *, seed: int = 0, scheduler_config: dict[str, Any] | None = None
) -> DiffusionPipeline:
    """A tiny random-weight pipeline of `family` on the CPU in float32, deterministic in `seed`."""
    if (kit := _transformer_kit(family)) is not None:
        built: DiffusionPipeline = kit.tiny_pipeline(seed=seed, scheduler_config=scheduler_config)
        return built
    _check(family)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        parts = _components(family)
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.eval()  # as from_pretrained leaves them: built modules start in training mode
    parts["scheduler"] = _scheduler(family, scheduler_config)
    if family == "sdxl":
        return StableDiffusionXLPipeline(**parts, add_watermarker=False)
    # No safety checker, as in the Turbo repos; diffusers' signature types it as required.
    parts |= {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    return StableDiffusionPipeline(**parts)


def save_tiny_pipeline(
    family: Family,
    path: str | Path,
    *,
    seed: int = 0,
    scheduler_config: dict[str, Any] | None = None,
    fp16_variant: bool = True,
) -> Path:
    """Save a tiny pipeline as a diffusers folder, with the `fp16` variant files the real repos also ship."""
    path = Path(path)
    tiny_pipeline(family, seed=seed, scheduler_config=scheduler_config).save_pretrained(path)
    kit = _transformer_kit(family)
    if kit is not None and kit.MODEL_INDEX is not None:  # the repo's own model_index.json, key for key
        (path / "model_index.json").write_text(json.dumps(kit.MODEL_INDEX, indent=2, sort_keys=True) + "\n")
    if fp16_variant:
        for weights in sorted(path.glob("*/*.safetensors")):
            _write_fp16_copy(weights, weights.with_suffix(".fp16.safetensors"))
    return path


def _write_fp16_copy(source: Path, target: Path) -> None:
    # Cast the saved file rather than the modules: `.to(float16)` on a live pipeline logs warnings and the
    # transformers configs would then record float16 for the float32 files.
    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(half, str(target), metadata=metadata)


@lru_cache(maxsize=8)
def _unet_state(family: Family, seed: int) -> dict[str, torch.Tensor]:
    """The tiny UNet's state dict, built once per process (read-only: callers copy before changing it)."""
    return dict(tiny_unet(family, seed=seed).state_dict())


def tiny_unet_checkpoint(
    family: Family,
    path: str | Path,
    *,
    seed: int,
    base_seed: int = 0,
    pickle: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """A full UNet state dict for the tiny `family` UNet, like a distilled UNet: the base weights, perturbed."""
    path = Path(path)
    noise = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in _unet_state(family, base_seed).items():
        # ~10% of each tensor's spread: the output changes clearly, as after a distillation of the base
        scale = 0.1 * value.std() if value.numel() > 1 else 0.1 * value.abs()
        state[key] = (value + torch.randn(value.shape, generator=noise) * (scale + 1e-3)).to(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    if pickle:
        torch.save(state, path)  # like DMD2's `.bin`: a pickled plain dict of tensors
    else:
        save_file(state, str(path), metadata={"format": "pt"})
    return path


def _denoiser_state(family: Family) -> dict[str, torch.Tensor]:
    if (kit := _transformer_kit(family)) is None:
        return _unet_state(family, 0)
    return dict(getattr(kit.tiny_pipeline(seed=0), FAMILIES[family].denoiser).state_dict())


@lru_cache(maxsize=4)
def _lora_targets(family: Family) -> tuple[tuple[str, int, int], ...]:
    """(module, in_features, out_features) of every attention projection of the tiny UNet or transformer."""
    suffixes = tuple(f".{name}.weight" for name in ("to_q", "to_k", "to_v", "to_out.0"))
    state = _denoiser_state(family).items()
    return tuple((k.removesuffix(".weight"), v.shape[1], v.shape[0]) for k, v in state if k.endswith(suffixes))


def _uniform(shape: tuple[int, int], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def tiny_lora(family: Family, path: str | Path, *, seed: int, rank: int = 4) -> Path:
    """A LoRA for the tiny `family` UNet or transformer in diffusers' format (what `save_lora_weights` writes from
    peft), on the attention projections."""
    path = Path(path)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for module, fan_in, fan_out in _lora_targets(family):
        # nn.Linear's init for both factors: peft's default zeroes B, and a zero LoRA would change nothing.
        prefix = f"{FAMILIES[family].denoiser}.{module}"
        state[f"{prefix}.lora_A.weight"] = _uniform((rank, fan_in), fan_in**-0.5, generator)
        state[f"{prefix}.lora_B.weight"] = _uniform((fan_out, rank), rank**-0.5, generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt"})  # no alpha stored: diffusers then uses alpha = rank
    return path
