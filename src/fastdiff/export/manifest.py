"""`manifest.json`: what a runtime needs from the preset besides the ONNX files.

The scheduler's timesteps and sigmas for every allowed step count (from the preset's real diffusers scheduler,
built by its recipe), guidance, the latent shape and VAE scaling, SDXL's size conditioning, and each tokenizer's
BPE vocabulary and merges with its special tokens, so that a page can tokenize, noise, step and decode alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .._quiet import silenced
from ..presets import Preset
from ..schedulers import build_scheduler
from .modules import latent_size, tokenizers, unet_batch

if TYPE_CHECKING:
    from .onnx import Exported

__all__ = ["FORMAT", "build_manifest", "schedules", "tokenizer_spec"]

FORMAT = 1  # bump when a field changes meaning


def _floats(values: Any) -> list[float]:
    return [float(v) for v in torch.as_tensor(values).flatten().tolist()]


def schedules(pipe: Any, preset: Preset) -> dict[str, dict[str, Any]]:
    """For each allowed step count: the UNet timesteps, and the sigmas and initial noise scale where the
    scheduler has them (Euler), exactly as diffusers' `set_timesteps` leaves them."""
    scheduler: Any = build_scheduler(preset.scheduler, copy.deepcopy(pipe.scheduler))
    out: dict[str, dict[str, Any]] = {}
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
            out[str(steps)] = entry
    return out


def _scheduler_spec(pipe: Any, preset: Preset) -> dict[str, Any]:
    built: Any = build_scheduler(preset.scheduler, copy.deepcopy(pipe.scheduler))
    config = built.config
    return {
        "class": type(built).__name__,
        "recipe": preset.scheduler,
        "prediction_type": config.prediction_type,
        "timestep_spacing": config.get("timestep_spacing"),
        "eta": preset.eta,
        "schedules": schedules(pipe, preset),
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


def _vae_spec(decoder: Any) -> dict[str, Any]:
    config = decoder.config
    return {
        "scaling_factor": float(config.scaling_factor),
        "latents_mean": getattr(config, "latents_mean", None),
        "latents_std": getattr(config, "latents_std", None),
        "tiny": type(decoder).__name__ == "AutoencoderTiny",
    }


def _model_spec(e: Exported) -> dict[str, Any]:
    spec = {"file": e.path.name, "inputs": list(e.inputs), "outputs": list(e.outputs), "bytes": e.bytes}
    return spec | ({"external_data": e.external_data} if e.external_data else {})


def build_manifest(
    pipe: Any, preset: Preset, *, height: int, width: int, models: Sequence[Exported], decoder: Any, dtype: str
) -> dict[str, Any]:
    """The whole manifest for the files in `models`, exported from `pipe` at `height` × `width`."""
    h, w = latent_size(pipe, height, width)
    names = ["input_ids", *(f"input_ids_{i + 2}" for i in range(len(tokenizers(pipe)) - 1))]
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
        "scheduler": _scheduler_spec(pipe, preset),
        "vae": _vae_spec(decoder),
        "unet_constants": constants,
        "tokenizers": [tokenizer_spec(t, n) for t, n in zip(tokenizers(pipe), names, strict=True)],
        "models": {e.name: _model_spec(e) for e in models},
    }
