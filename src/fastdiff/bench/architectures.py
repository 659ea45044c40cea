"""The real architectures of the benchmarked repos, read from their published configs (`fastdiff.configs`): every
shipped repo whose denoiser's config is there, whatever its family, as its model_index.json names each component."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, TypeVar

from ..configs import config_repos, repo_config
from ..configs.tokenizer import EOS
from ..errors import FastDiffError, did_you_mean

__all__ = ["ARCHITECTURES", "TINY_VAE", "Architecture", "architecture", "tiny_architecture"]

# TAESD and TAESDXL (madebyollin/taesd, madebyollin/taesdxl): the same layout, other weights. `optimize="max"`
# decodes with it; taef1 and taesd3 differ only in their 16 latent channels.
TINY_VAE: dict[str, Any] = repo_config("madebyollin/taesd", "config.json")
DENOISERS = ("unet", "transformer")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Architecture:
    """One repo's pipeline class, the configs of its modules, its tokenizers' classes and its scheduler config."""

    repo_id: str
    pipeline: str  # model_index.json "_class_name"
    modules: dict[str, tuple[str, str, dict[str, Any]]]  # component -> (library, class, config); denoiser first
    tokenizers: dict[str, tuple[str, str]]  # component -> (class, the pad token of the repo's tokenizer)
    scheduler: dict[str, Any]
    flags: dict[str, Any]  # model_index.json's other settings (FLUX.2 klein's `is_distilled`), given to the pipeline
    tiny_vae: dict[str, Any]

    @property
    def denoiser(self) -> str:
        """The component that denoises: "unet" or "transformer"."""
        return next(iter(self.modules))

    def config(self, component: str) -> dict[str, Any]:
        """The config of one module ("unet", "text_encoder_2", …)."""
        return self.modules[component][2]

    # Deprecated: the UNet-only fields of the SD/SDXL-only Architecture, read from `modules` now.
    @property
    def unet(self) -> dict[str, Any]:
        """Deprecated: `config("unet")`."""
        return self._deprecated("unet", self.config("unet"))

    @property
    def vae(self) -> dict[str, Any]:
        """Deprecated: `config("vae")`."""
        return self._deprecated("vae", self.config("vae"))

    @property
    def text_encoders(self) -> tuple[dict[str, Any], ...]:
        """Deprecated: `config("text_encoder")`, `config("text_encoder_2")`, …"""
        configs = tuple(config for name, (_, _, config) in self.modules.items() if name.startswith("text_encoder"))
        return self._deprecated("text_encoders", configs)

    @property
    def pad_tokens(self) -> tuple[str, ...]:
        """Deprecated: `tokenizers`, each (class, pad token)."""
        return self._deprecated("pad_tokens", tuple(pad for _, pad in self.tokenizers.values()))

    def _deprecated(self, name: str, value: _T) -> _T:
        warnings.warn(f"Architecture.{name} is deprecated: read .config(name) or .modules", DeprecationWarning, 3)
        return value


def _optional_config(repo_id: str, path: str) -> dict[str, Any] | None:
    try:
        return repo_config(repo_id, path)
    except FileNotFoundError:
        return None


def _read(repo_id: str) -> Architecture | None:
    """`repo_id`'s architecture, or None when a module's config is not shipped (only the scheduler's, say)."""
    index = repo_config(repo_id, "model_index.json")
    modules, tokenizers = {}, {}
    for name, spec in index.items():
        library, cls = spec if isinstance(spec, list) else (None, None)
        if cls is None or name == "scheduler":  # a setting, or a component the repo leaves out (SDXL's image encoder)
            continue
        if "Tokenizer" in cls:
            special = _optional_config(repo_id, f"{name}/special_tokens_map.json") or {}
            tokenizers[name] = (cls, special.get("pad_token", EOS))  # "!" for OpenCLIP, else CLIP's EOS
        # SD's safety checker is another library's and its feature extractor no module: neither is built.
        elif library in ("diffusers", "transformers") and not cls.endswith(("Processor", "FeatureExtractor")):
            config = _optional_config(repo_id, f"{name}/config.json")
            if config is None:  # a module whose config is not shipped (yet): no architecture
                return None
            modules[name] = (library, cls, config)
    denoiser = next((name for name in DENOISERS if name in modules), None)
    if denoiser is None:
        return None
    modules = {denoiser: modules.pop(denoiser), **modules}
    latent_channels = modules["vae"][2].get("latent_channels", 4) if "vae" in modules else 4
    return Architecture(
        repo_id=repo_id,
        pipeline=index["_class_name"],
        modules=modules,
        tokenizers=tokenizers,
        scheduler=repo_config(repo_id, "scheduler/scheduler_config.json"),
        flags={k: v for k, v in index.items() if not k.startswith("_") and not isinstance(v, list)},
        tiny_vae=TINY_VAE | {"latent_channels": latent_channels},
    )


# Every pipeline repo whose configs fastdiff ships: a new family needs its configs there, no code here.
ARCHITECTURES: dict[str, Architecture] = {repo: arch for repo in config_repos() if (arch := _read(repo)) is not None}


def architecture(repo_id: str) -> Architecture:
    """The architecture of a pipeline repo; unknown repos raise with the closest match."""
    if repo_id not in ARCHITECTURES:
        raise FastDiffError(
            f"no built-in architecture for {repo_id!r}: ship its model_index.json and every module's config.json in "
            f"fastdiff/configs/{repo_id}/" + did_you_mean(repo_id, ARCHITECTURES)
        )
    return ARCHITECTURES[repo_id]


# Text encoders' widths are divided by this (CLIP-L 768 -> 12, T5-XXL 4096 -> 64), and so are the denoiser's settings
# that read them: sums and multiples still match (SD3's pooled 2048 = 768 + 1280, FLUX.2's 7680 = 3 × 2560).
_TEXT = 64
_TEXT_WIDTHS = ("joint_attention_dim", "pooled_projection_dim", "caption_channels", "cap_feat_dim")
_TRANSFORMER_LAYERS = ("num_layers", "num_single_layers", "n_layers", "n_refiner_layers")


def _tiny_text_encoder(config: dict[str, Any]) -> dict[str, Any]:
    """Widths over `_TEXT`, 2 heads of 8; depth kept, as pipelines read given layers (FLUX.2: 9, 18 and 27)."""
    small = dict(config)
    for key in ("hidden_size", "d_model", "projection_dim", "out_hidden_size"):
        if isinstance(small.get(key), int):
            small[key] //= _TEXT
    narrow = {"intermediate_size": 37, "d_ff": 37, "num_attention_heads": 2, "num_heads": 2, "num_key_value_heads": 1}
    small |= {key: value for key, value in (narrow | {"head_dim": 8, "d_kv": 8}).items() if key in small}
    for nested in ("text_config", "vision_config"):  # a vision-language encoder's two towers
        if isinstance(small.get(nested), dict):
            small[nested] = _tiny_text_encoder(small[nested])
    for key in ("rope_scaling", "rope_parameters"):  # Qwen2.5-VL's 3D RoPE: its sections add up to half a head
        rope = small.get(key)
        if isinstance(rope, dict) and "mrope_section" in rope:
            half = small.get("head_dim", small["hidden_size"] // small["num_attention_heads"]) // 2
            sections = [max(1, s * half // sum(rope["mrope_section"])) for s in rope["mrope_section"][:-1]]
            small[key] = rope | {"mrope_section": [*sections, half - sum(sections)]}
    return small


def _tiny_transformer(config: dict[str, Any]) -> dict[str, Any]:
    """One block of each kind, 2 heads of the real head width (RoPE's axes add up to it); the widths that are heads
    × head width (SANA's cross-attention, SD3's caption projection, Z-Image's `dim`) follow."""
    small = dict(config)
    heads = small.get("num_attention_heads") or small["n_heads"]
    head_dim = small.get("attention_head_dim") or small["dim"] // heads
    for key, value in config.items():
        if key in _TEXT_WIDTHS:
            small[key] = value // _TEXT
        elif key in _TRANSFORMER_LAYERS:
            small[key] = 1
        elif key.endswith("heads"):
            small[key] = 2
        elif type(value) is int and value == heads * head_dim:
            small[key] = 2 * head_dim
    if "cross_attention_head_dim" in small:
        small["cross_attention_head_dim"] = 2 * head_dim // small["num_cross_attention_heads"]
    return small


def _tiny_unet(config: dict[str, Any]) -> dict[str, Any]:
    levels = len(config["block_out_channels"])
    unet = config | {
        "block_out_channels": [16 * 2**i for i in range(levels)],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "attention_head_dim": 2,
        "cross_attention_dim": config["cross_attention_dim"] // _TEXT,  # the encoders' hidden states, concatenated
    }
    if "transformer_layers_per_block" in unet:
        unet["transformer_layers_per_block"] = 1
    if unet.get("addition_embed_type") == "text_time":  # 6 time ids × their width + the pooled projection
        pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        unet |= {"addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + pooled // _TEXT}
    return unet


def _tiny_vae(config: dict[str, Any]) -> dict[str, Any]:
    """8-16 channels a level (at least the latent's in the deep half, which AutoencoderDC's shortcuts need) and one
    layer each, the levels (so the scale factor) kept."""
    small = dict(config)
    wide = max(16, config.get("latent_channels", 0))
    for key, value in config.items():
        if key.endswith("block_out_channels"):  # AutoencoderKL's; AutoencoderDC's encoder_ and decoder_ ones
            small[key] = [8] * (len(value) // 2) + [wide] * (len(value) - len(value) // 2)
        elif key.endswith("layers_per_block"):
            small[key] = 1 if isinstance(value, int) else [1] * len(value)
    if "block_out_channels" in config:  # AutoencoderKL's group norms over 8 channels
        small["norm_num_groups"] = 4
    narrow = {"attention_head_dim": 8, "base_dim": 8, "num_res_blocks": 1}  # AutoencoderDC's, Qwen-Image's
    return small | {key: value for key, value in narrow.items() if key in config}


def tiny_architecture(arch: Architecture) -> Architecture:
    """`arch`'s wiring (levels, block types, text-time embedding, RoPE axes, encoders and their depth) at toy widths:
    a step takes milliseconds, for smoke runs, not timings."""
    shrink = {"unet": _tiny_unet, "transformer": _tiny_transformer, "vae": _tiny_vae}
    modules = {
        name: (library, cls, shrink.get(name, _tiny_text_encoder)(config))
        for name, (library, cls, config) in arch.modules.items()
    }
    tiny_vae = arch.tiny_vae | {"encoder_block_out_channels": [8] * 4, "decoder_block_out_channels": [8] * 4}
    return dataclasses.replace(arch, modules=modules, tiny_vae=tiny_vae)
