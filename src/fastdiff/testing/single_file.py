"""Write a diffusers pipeline as one original-format checkpoint (LDM / SGM key names), like `sd_xl_turbo_1.0_fp16`.

This is the inverse of the conversions in `diffusers.loaders.single_file_utils`: what `from_single_file` turns
into diffusers keys, these functions turn back. Every module key must map to exactly one original key, so a
layer the mapping misses fails loudly here instead of loading as random weights there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from safetensors.torch import save_file

__all__ = ["original_state_dict", "save_single_file", "unet_to_original", "vae_to_original"]

Tensors = dict[str, torch.Tensor]

# Renames that do not depend on the layout of the blocks.
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's text-time embedding
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_TOP = {"conv_norm_out": "norm_out"}  # conv_in, conv_out, quant_conv and post_quant_conv keep their names
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPEN_CLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPEN_CLIP_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}


def _unet_prefixes(config: Any) -> dict[str, str]:
    """Diffusers block prefix -> original block prefix, following the numbering of the original UNet."""
    per_block, last = config.layers_per_block, len(config.down_block_types) - 1
    prefixes = {"mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1."}
    prefixes["mid_block.resnets.1."] = "middle_block.2."
    i = 1  # input_blocks.0 is conv_in
    for b in range(last + 1):
        for layer in range(per_block):
            prefixes[f"down_blocks.{b}.resnets.{layer}."] = f"input_blocks.{i}.0."
            prefixes[f"down_blocks.{b}.attentions.{layer}."] = f"input_blocks.{i}.1."
            i += 1
        if b < last:  # the downsampler is an input block of its own
            prefixes[f"down_blocks.{b}.downsamplers.0.conv."] = f"input_blocks.{i}.0.op."
            i += 1
    for b, kind in enumerate(config.up_block_types):
        for layer in range(per_block + 1):
            j = b * (per_block + 1) + layer
            prefixes[f"up_blocks.{b}.resnets.{layer}."] = f"output_blocks.{j}.0."
            prefixes[f"up_blocks.{b}.attentions.{layer}."] = f"output_blocks.{j}.1."
        if b < last:  # the upsampler follows the last layer's resnet (and attention, if any)
            slot = 2 if "CrossAttn" in kind else 1
            prefixes[f"up_blocks.{b}.upsamplers.0.conv."] = f"output_blocks.{j}.{slot}.conv."
    return prefixes


def _rename(key: str, prefixes: dict[str, str], inner: dict[str, str]) -> str | None:
    """Apply the block prefix that `key` starts with, then rename the first part of the rest with `inner`."""
    for new, old in prefixes.items():
        if key.startswith(new):
            rest = key[len(new) :]
            for n, o in inner.items():
                if rest.startswith(n + "."):
                    return old + o + rest[len(n) :]
            return old + rest
    return None


def _strict(mapped: dict[str, str | None], what: str) -> dict[str, str]:
    missing = [k for k, v in mapped.items() if v is None]
    if missing:
        raise ValueError(f"no original-format name for {len(missing)} {what} keys, e.g. {missing[:3]}")
    return {k: v for k, v in mapped.items() if v is not None}


def unet_to_original(unet: UNet2DConditionModel) -> Tensors:
    """The UNet's state dict under the original LDM/SGM names (without the `model.diffusion_model.` prefix)."""
    top = {f"{n}.": f"{o}." for n, o in _UNET_TOP.items()}
    prefixes = {**top, **_unet_prefixes(unet.config)}
    state = unet.state_dict()
    names = _strict({k: _rename(k, prefixes, _UNET_RESNET) for k in state}, "UNet")
    return {names[k]: v for k, v in state.items()}


def _vae_prefixes(config: Any) -> dict[str, str]:
    """Diffusers VAE prefix -> original prefix; the decoder's up blocks are numbered from the bottom."""
    n = len(config.up_block_types)
    prefixes = {f"{part}.{new}.": f"{part}.{old}." for part in ("encoder", "decoder") for new, old in _VAE_TOP.items()}
    for part in ("encoder", "decoder"):
        prefixes |= {f"{part}.mid_block.resnets.{k}.": f"{part}.mid.block_{k + 1}." for k in range(2)}
        prefixes[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
    for b in range(len(config.down_block_types)):
        prefixes[f"encoder.down_blocks.{b}.resnets."] = f"encoder.down.{b}.block."
        prefixes[f"encoder.down_blocks.{b}.downsamplers.0."] = f"encoder.down.{b}.downsample."
    for b in range(n):
        prefixes[f"decoder.up_blocks.{b}.resnets."] = f"decoder.up.{n - 1 - b}.block."
        prefixes[f"decoder.up_blocks.{b}.upsamplers.0."] = f"decoder.up.{n - 1 - b}.upsample."
    return prefixes


def _vae_key(key: str, prefixes: dict[str, str]) -> str:
    renamed = _rename(key, prefixes, _VAE_ATTENTION) if ".attentions." in key else _rename(key, prefixes, {})
    renamed = renamed if renamed is not None else key  # quant_conv, conv_in, ...: same name in both formats
    return renamed.replace(".conv_shortcut.", ".nin_shortcut.")


def vae_to_original(vae: AutoencoderKL) -> Tensors:
    """The VAE's state dict under the original names (without `first_stage_model.`), attention as 1x1 convs."""
    prefixes = _vae_prefixes(vae.config)
    out: Tensors = {}
    for key, value in vae.state_dict().items():
        is_attention_linear = ".attentions." in key and value.ndim == 2
        out[_vae_key(key, prefixes)] = value[:, :, None, None] if is_attention_linear else value
    return out


def _text_model_keys(encoder: torch.nn.Module) -> Tensors:
    """The encoder's state dict with the `text_model.` level the files keep (transformers >= 5.6 drops it)."""
    state = encoder.state_dict().items()
    return {k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k: v for k, v in state}


def _open_clip_to_original(state: Tensors) -> Tensors:
    """OpenCLIP's names: fused q/k/v `in_proj`, `resblocks`, and the projection as a (hidden, proj) matrix."""
    state = dict(state)
    out: Tensors = {o: state.pop(n) for n, o in _OPEN_CLIP_TOP.items()}
    if "text_projection.weight" in state:  # SDXL's second encoder; SD 2 uses the hidden states unprojected
        out["text_projection"] = state.pop("text_projection.weight").T.contiguous()
    layer = 0
    while f"text_model.encoder.layers.{layer}.self_attn.q_proj.weight" in state:
        src, dst = f"text_model.encoder.layers.{layer}.", f"transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv)
        for key in [k for k in state if k.startswith(src)]:
            out[_rename(key, {src: dst}, _OPEN_CLIP_LAYER) or key] = state.pop(key)
        layer += 1
    if state:
        raise ValueError(f"no OpenCLIP name for {len(state)} text encoder keys, e.g. {sorted(state)[:3]}")
    return out


def _prefixed(prefix: str, tensors: Tensors) -> Tensors:
    return {prefix + k: v for k, v in tensors.items()}


def original_state_dict(pipe: DiffusionPipeline) -> Tensors:
    """The whole pipeline as one original-format state dict (SDXL: SGM names; SD 1/2: LDM names)."""
    state = _prefixed("model.diffusion_model.", unet_to_original(pipe.unet))
    state |= _prefixed("first_stage_model.", vae_to_original(pipe.vae))
    text = _text_model_keys(pipe.text_encoder)
    if getattr(pipe, "text_encoder_2", None) is not None:
        state |= _prefixed("conditioner.embedders.0.transformer.", text)
        state |= _prefixed(
            "conditioner.embedders.1.model.", _open_clip_to_original(_text_model_keys(pipe.text_encoder_2))
        )
    elif pipe.text_encoder.config.hidden_act == "quick_gelu":  # OpenAI's CLIP-L, as in SD 1.x
        state |= _prefixed("cond_stage_model.transformer.", text)
    else:  # OpenCLIP (gelu), as in SD 2.x
        state |= _prefixed("cond_stage_model.model.", _open_clip_to_original(text))
    return state


def save_single_file(pipe: DiffusionPipeline, path: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Save `pipe` as one original-format `.safetensors` checkpoint that `from_single_file(config=...)` loads."""
    path = Path(path)
    state = original_state_dict(pipe)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    return path
