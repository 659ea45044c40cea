"""The real architectures of the benchmarked repos: their published configs, encoded here as data.

The configs below are the `config.json` files of each repo (key for key where they shape the network;
bookkeeping keys such as `_diffusers_version` left out); `random_weights.py` builds them with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import FastDiffError, did_you_mean
from ..presets import SD15_REPO, SD_TURBO_REPO, SDXL_BASE_REPO, SDXL_TURBO_REPO
from ..testing.repo_configs import SCHEDULER_CONFIGS

__all__ = [
    "ARCHITECTURES",
    "SD15_REPO",
    "SDXL_BASE_REPO",
    "SDXL_TURBO_REPO",
    "SD_TURBO_REPO",
    "TINY_VAE",
    "Architecture",
    "architecture",
    "shares_weights",
]


# The VAE of SD 1.x/2.x and SDXL: same layout, SDXL adds its own scaling factor and fp32 upcast.
_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
}

# CLIP ViT-L/14 text tower: SD 1.5's encoder and SDXL's first one.
_CLIP_L: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
_CLIP_COMMON: dict[str, Any] = {
    "vocab_size": 49408,  # sets the embedding table size; the code-made tokenizer's ids stay below it
    "max_position_embeddings": 77,
    "layer_norm_eps": 1e-05,
    "bos_token_id": 0,
    "eos_token_id": 2,  # 2 selects CLIP's legacy pooling (argmax id = EOS), which the code-made tokenizer keeps
    "pad_token_id": 1,
}

# Keys every SD 1.x/2.x/SDXL UNet config of these repos publishes with the same value.
_UNET_COMMON: dict[str, Any] = {
    "act_fn": "silu",
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
}

_SD15_UNET: dict[str, Any] = {
    **_UNET_COMMON,
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "sample_size": 64,
}

# SD 2.1 (SD-Turbo): linear projections, per-level head dims, OpenCLIP-H context (1024 wide).
_SD21_UNET: dict[str, Any] = {
    **_SD15_UNET,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}

_SDXL_UNET: dict[str, Any] = {
    **_UNET_COMMON,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048,  # CLIP-L (768) + OpenCLIP-bigG (1280) hidden states, concatenated
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "projection_class_embeddings_input_dim": 2816,  # 6 time ids x 256 + pooled bigG projection (1280)
    "transformer_layers_per_block": [1, 2, 10],
    "use_linear_projection": True,
}


# TAESD and TAESDXL (madebyollin/taesd, madebyollin/taesdxl): the same layout, other weights; these are also
# `AutoencoderTiny`'s defaults. `optimize="max"` decodes with it.
TINY_VAE: dict[str, Any] = {
    "act_fn": "relu",
    "encoder_block_out_channels": [64, 64, 64, 64],
    "decoder_block_out_channels": [64, 64, 64, 64],
    "num_encoder_blocks": [1, 3, 3, 3],
    "num_decoder_blocks": [3, 3, 3, 1],
    "latent_channels": 4,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "scaling_factor": 1.0,
    "upsampling_scaling_factor": 2,
}


@dataclass(frozen=True)
class Architecture:
    """One repo's pipeline class, module configs and scheduler config (the facts in its JSON files)."""

    repo_id: str
    pipeline: str  # model_index.json "_class_name"
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: tuple[dict[str, Any], ...]  # one for SD 1.x/2.x, two (CLIPTextModel, ...WithProjection) for SDXL
    pad_tokens: tuple[str, ...]  # what each real tokenizer pads with ("!" for OpenCLIP)
    scheduler: dict[str, Any] = field(default_factory=dict)


ARCHITECTURES: dict[str, Architecture] = {
    SD15_REPO: Architecture(
        repo_id=SD15_REPO,
        pipeline="StableDiffusionPipeline",
        unet=_SD15_UNET,
        vae={**_VAE, "sample_size": 512},
        text_encoders=({**_CLIP_COMMON, **_CLIP_L},),
        pad_tokens=("<|endoftext|>",),
        scheduler=SCHEDULER_CONFIGS[SD15_REPO],
    ),
    SD_TURBO_REPO: Architecture(
        repo_id=SD_TURBO_REPO,
        pipeline="StableDiffusionPipeline",
        unet=_SD21_UNET,
        vae={**_VAE, "sample_size": 768},
        # OpenCLIP-H: SD 2 uses the penultimate layer, so the converted encoder keeps 23 of its 24 layers.
        text_encoders=(
            {
                **_CLIP_COMMON,
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_attention_heads": 16,
                "num_hidden_layers": 23,
                "projection_dim": 512,
                "hidden_act": "gelu",
            },
        ),
        pad_tokens=("!",),
        scheduler=SCHEDULER_CONFIGS[SD_TURBO_REPO],
    ),
    **{
        repo: Architecture(
            repo_id=repo,
            pipeline="StableDiffusionXLPipeline",
            unet={**_SDXL_UNET, "sample_size": sample_size},
            vae={**_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
            text_encoders=(
                {**_CLIP_COMMON, **_CLIP_L},
                {
                    **_CLIP_COMMON,
                    "hidden_size": 1280,
                    "intermediate_size": 5120,
                    "num_attention_heads": 20,
                    "num_hidden_layers": 32,
                    "projection_dim": 1280,
                    "hidden_act": "gelu",
                },
            ),
            pad_tokens=("<|endoftext|>", "!"),
            scheduler=SCHEDULER_CONFIGS[repo],
        )
        for repo, sample_size in ((SDXL_TURBO_REPO, 64), (SDXL_BASE_REPO, 128))
    },
}


def architecture(repo_id: str) -> Architecture:
    """The architecture of a pipeline repo; unknown repos raise with the closest match."""
    try:
        return ARCHITECTURES[repo_id]
    except KeyError:
        raise FastDiffError(
            f"no built-in architecture for {repo_id!r}" + did_you_mean(repo_id, ARCHITECTURES)
        ) from None


def shares_weights(a: Architecture, b: Architecture) -> bool:
    """True when both repos have the same module shapes (SDXL-Turbo and SDXL base differ only in default size)."""

    def shapes(arch: Architecture) -> tuple[Any, ...]:
        unet = {k: v for k, v in arch.unet.items() if k != "sample_size"}
        vae = {k: v for k, v in arch.vae.items() if k != "sample_size"}
        return (arch.pipeline, sorted(unet.items()), sorted(vae.items()), arch.text_encoders)

    return shapes(a) == shapes(b)
