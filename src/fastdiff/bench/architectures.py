"""The real architectures of the benchmarked repos, read from their published configs (`fastdiff.configs`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..configs import config_repos, repo_config
from ..errors import FastDiffError, did_you_mean

__all__ = ["ARCHITECTURES", "TINY_VAE", "Architecture", "architecture", "tiny_architecture"]

# TAESD and TAESDXL (madebyollin/taesd, madebyollin/taesdxl): the same layout, other weights. `optimize="max"`
# decodes with it.
TINY_VAE: dict[str, Any] = repo_config("madebyollin/taesd", "config.json")


@dataclass(frozen=True)
class Architecture:
    """One repo's pipeline class, module configs and scheduler config (the facts in its JSON files)."""

    repo_id: str
    pipeline: str  # model_index.json "_class_name"
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: tuple[dict[str, Any], ...]  # one for SD 1.x/2.x, two (CLIPTextModel, ...WithProjection) for SDXL
    pad_tokens: tuple[str, ...]  # what each real tokenizer pads with ("!" for OpenCLIP)
    scheduler: dict[str, Any]
    tiny_vae: dict[str, Any] = dataclasses.field(default_factory=lambda: TINY_VAE)


def _read(repo_id: str) -> Architecture:
    index = repo_config(repo_id, "model_index.json")
    encoders = [name for name in ("text_encoder", "text_encoder_2") if name in index]
    return Architecture(
        repo_id=repo_id,
        pipeline=index["_class_name"],
        unet=repo_config(repo_id, "unet/config.json"),
        vae=repo_config(repo_id, "vae/config.json"),
        text_encoders=tuple(repo_config(repo_id, f"{name}/config.json") for name in encoders),
        pad_tokens=tuple(
            repo_config(repo_id, f"{name.replace('text_encoder', 'tokenizer')}/special_tokens_map.json")["pad_token"]
            for name in encoders
        ),
        scheduler=repo_config(repo_id, "scheduler/scheduler_config.json"),
    )


# The UNet pipelines (SD 1.x/2.x, SDXL) whose configs fastdiff ships.
ARCHITECTURES: dict[str, Architecture] = {
    repo: _read(repo) for repo in config_repos() if "unet" in repo_config(repo, "model_index.json")
}


def architecture(repo_id: str) -> Architecture:
    """The architecture of a pipeline repo; unknown repos raise with the closest match."""
    if repo_id not in ARCHITECTURES:
        raise FastDiffError(f"no built-in architecture for {repo_id!r}" + did_you_mean(repo_id, ARCHITECTURES))
    return ARCHITECTURES[repo_id]


def tiny_architecture(arch: Architecture) -> Architecture:
    """`arch`'s wiring (levels, block types, text-time embedding, linear projections, encoders) at toy widths: a
    step takes milliseconds, for smoke runs, not timings."""
    encoder = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    levels = len(arch.unet["block_out_channels"])
    unet = arch.unet | {
        "block_out_channels": [16 * 2**i for i in range(levels)],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "attention_head_dim": 2,
        "cross_attention_dim": 32 * len(arch.text_encoders),  # the encoders' hidden states, concatenated
    }
    if "transformer_layers_per_block" in unet:
        unet["transformer_layers_per_block"] = 1
    if unet.get("addition_embed_type") == "text_time":  # 6 time ids x 8 + the pooled projection (32)
        unet |= {"addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 32}
    return dataclasses.replace(
        arch,
        unet=unet,
        vae=arch.vae | {"block_out_channels": [8, 8, 16, 16], "norm_num_groups": 4, "layers_per_block": 1},
        text_encoders=tuple(config | encoder | {"projection_dim": 32} for config in arch.text_encoders),
        tiny_vae=arch.tiny_vae | {"encoder_block_out_channels": [8] * 4, "decoder_block_out_channels": [8] * 4},
    )
