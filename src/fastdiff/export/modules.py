"""What is exported: a pipeline's text encoder(s), UNet and VAE decoder as modules with tensor-only inputs, each
computing what the diffusers pipeline computes there, and `manifest.json`, the rest a runtime needs (schedules,
tokenizers, latent shape and scaling) to tokenize, noise, step and decode alone.

The text encoder's outputs are named as the UNet inputs they feed (`encoder_hidden_states`, `text_embeds`), so a
runtime that knows nothing of the family passes one's outputs to the other by name.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._quiet import silenced
from ..errors import FastDiffError
from ..presets import Preset
from ..schedulers import build_scheduler

if TYPE_CHECKING:
    from .onnx import Exported

__all__ = ["FORMAT", "Component", "build_manifest", "components", "latent_size", "scheduler_spec", "tokenizer_spec"]

FORMAT = 1  # the manifest's format: bump when a field changes meaning


@dataclass(frozen=True)
class Component:
    """One module to export: its file stem, the module, named example inputs and the names of its outputs."""

    name: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: tuple[str, ...]


class TextEncoders(nn.Module):
    """Token ids of each tokenizer → the pipeline's `prompt_embeds` (and SDXL's pooled embedding), as its
    `encode_prompt` computes them (SD: the last hidden state; SDXL: both encoders' penultimate ones)."""

    def __init__(self, encoders: list[Any], *, sdxl: bool) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.sdxl = sdxl

    def forward(self, *ids: torch.Tensor) -> Any:
        if not self.sdxl:
            return self.encoders[0](ids[0])[0]  # (1, L, D)
        hidden, pooled = [], None
        for encoder, x in zip(self.encoders, ids, strict=True):
            out = encoder(x, output_hidden_states=True)
            if out[0].ndim == 2:  # CLIPTextModelWithProjection: its first output is the pooled projection
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, dim=-1), pooled  # (1, L, D1 + D2), (1, P)


class Denoiser(nn.Module):
    """The UNet's noise (or x0, v) prediction for one scheduler step; SDXL's size conditioning as two inputs."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, hidden: torch.Tensor, *added: torch.Tensor) -> Any:
        cond = {"text_embeds": added[0], "time_ids": added[1]} if added else None
        return self.unet(sample, timestep, encoder_hidden_states=hidden, added_cond_kwargs=cond, return_dict=False)[0]


class Decoder(nn.Module):
    """`vae.decode` of unscaled latents (the caller divides by the scaling factor): an image in [-1, 1]."""

    def __init__(self, vae: Any) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> Any:
        return self.vae.decode(latents, return_dict=False)[0]  # (1, 3, H, W)


def tokenizers(pipe: Any) -> list[Any]:
    """The pipeline's tokenizers in encoder order (one for SD, two for SDXL)."""
    return [t for t in (pipe.tokenizer, getattr(pipe, "tokenizer_2", None)) if t is not None]


def latent_size(pipe: Any, height: int, width: int) -> tuple[int, int]:
    """(h, w) of the latents for an image of `height` × `width`, refusing sizes the VAE cannot make."""
    factor: int = pipe.vae_scale_factor
    if height % factor or width % factor:
        raise FastDiffError(f"height and width must be multiples of {factor}, got {height}x{width}")
    return height // factor, width // factor


def unet_batch(preset: Preset) -> int:
    """2 when the preset runs classifier-free guidance (unconditional and conditional rows), else 1."""
    return 1 if preset.guidance_free else 2


def components(
    pipe: Any, preset: Preset, *, height: int, width: int, decoder: Any = None, seed: int = 0
) -> list[Component]:
    """The text encoder(s), UNet and decoder (the pipeline's VAE unless `decoder` is given: a tiny autoencoder),
    with random example inputs drawn from `seed`."""
    sdxl = preset.family == "sdxl"
    h, w = latent_size(pipe, height, width)
    toks = tokenizers(pipe)
    encoders = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]
    gen = torch.Generator().manual_seed(seed)
    ids = {
        f"input_ids{'' if i == 0 else f'_{i + 1}'}": torch.randint(0, len(t), (1, t.model_max_length), generator=gen)
        for i, t in enumerate(toks)
    }
    text_outputs = ("encoder_hidden_states", "text_embeds") if sdxl else ("encoder_hidden_states",)
    unet = pipe.unet
    batch, length = unet_batch(preset), toks[0].model_max_length
    unet_inputs = {
        "sample": torch.randn(batch, unet.config.in_channels, h, w, generator=gen),
        "timestep": torch.rand(1, generator=gen) * 999,
        "encoder_hidden_states": torch.randn(batch, length, unet.config.cross_attention_dim, generator=gen),
    }
    if sdxl:
        pooled = pipe.text_encoder_2.config.projection_dim
        unet_inputs["text_embeds"] = torch.randn(batch, pooled, generator=gen)
        unet_inputs["time_ids"] = torch.tensor([[height, width, 0, 0, height, width]] * batch, dtype=torch.float32)
    vae = decoder if decoder is not None else pipe.vae
    latents = torch.randn(1, unet.config.out_channels, h, w, generator=gen)
    return [
        Component("text_encoder", TextEncoders(encoders, sdxl=sdxl).eval(), ids, text_outputs),
        Component("unet", Denoiser(unet).eval(), unet_inputs, ("out_sample",)),
        Component("vae_decoder", Decoder(vae).eval(), {"latents": latents}, ("image",)),
    ]


def _floats(values: Any) -> list[float]:
    return [float(v) for v in torch.as_tensor(values).flatten().tolist()]


def scheduler_spec(pipe: Any, preset: Preset) -> dict[str, Any]:
    """The preset's scheduler and, for each allowed step count, the UNet timesteps, and the sigmas and initial noise
    scale where the scheduler has them (Euler), exactly as diffusers' `set_timesteps` leaves them."""
    scheduler: Any = build_scheduler(preset.scheduler, copy.deepcopy(pipe.scheduler))
    schedules: dict[str, dict[str, Any]] = {}
    with silenced("numpy-copy"):  # numpy 2 flags diffusers' np.array(tensor) calls
        for steps in preset.steps:
            if preset.timesteps is not None:
                scheduler.set_timesteps(timesteps=list(preset.timesteps))
            else:
                scheduler.set_timesteps(steps)
            entry: dict[str, Any] = {"timesteps": _floats(scheduler.timesteps)}
            if getattr(scheduler, "sigmas", None) is not None:
                entry["sigmas"] = _floats(scheduler.sigmas)
            entry["init_noise_sigma"] = float(scheduler.init_noise_sigma)
            schedules[str(steps)] = entry
    return {
        "class": type(scheduler).__name__,
        "recipe": preset.scheduler,
        "prediction_type": scheduler.config.prediction_type,
        "timestep_spacing": scheduler.config.get("timestep_spacing"),
        "eta": preset.eta,
        "schedules": schedules,
    }


def tokenizer_spec(tokenizer: Any, input_name: str) -> dict[str, Any]:
    """A CLIP tokenizer as data: BPE vocabulary and merges, the added tokens (special tokens, SD 2's "!" pad),
    which are cut out of the text before anything else, special ids, and the fixed length it pads to."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model["merges"]]
    added = {t.content: i for i, t in tokenizer.added_tokens_decoder.items()}  # matched first, verbatim
    return {
        "input": input_name,
        "vocab": tokenizer.get_vocab(),
        "merges": merges,
        "added": added,
        "end_of_word": model.get("end_of_word_suffix") or "</w>",
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "unk": tokenizer.unk_token_id,
        "max_length": tokenizer.model_max_length,
    }


def _model_spec(e: Exported) -> dict[str, Any]:
    spec = {"file": e.path.name, "inputs": list(e.inputs), "outputs": list(e.outputs), "bytes": e.bytes}
    return spec | ({"external_data": e.external_data} if e.external_data else {})


def build_manifest(
    pipe: Any, preset: Preset, *, height: int, width: int, models: Sequence[Exported], decoder: Any, dtype: str
) -> dict[str, Any]:
    """The whole manifest for the files in `models`, exported from `pipe` at `height` × `width`."""
    h, w = latent_size(pipe, height, width)
    text_inputs = next(m.inputs for m in models if m.name == "text_encoder")  # named by `components`
    constants: dict[str, list[float]] = {}
    if preset.family == "sdxl":  # original size, crop top-left, target size: the pipeline's defaults
        constants["time_ids"] = [float(v) for v in (height, width, 0, 0, height, width)]
    return {
        "format": FORMAT,
        "preset": preset.name,
        "family": preset.family,
        "description": preset.description,
        "license": preset.license,
        "height": height,
        "width": width,
        "latent_shape": [1, pipe.unet.config.in_channels, h, w],
        "unet_batch": unet_batch(preset),
        "steps": list(preset.steps),
        "default_steps": preset.default_steps,
        "guidance_scale": preset.guidance_scale,
        "dtype": dtype,
        "scheduler": scheduler_spec(pipe, preset),
        "vae": {
            "scaling_factor": float(decoder.config.scaling_factor),
            "latents_mean": getattr(decoder.config, "latents_mean", None),
            "latents_std": getattr(decoder.config, "latents_std", None),
            "tiny": type(decoder).__name__ == "AutoencoderTiny",
        },
        "unet_constants": constants,
        "tokenizers": [tokenizer_spec(t, n) for t, n in zip(tokenizers(pipe), text_inputs, strict=True)],
        "models": {e.name: _model_spec(e) for e in models},
    }
