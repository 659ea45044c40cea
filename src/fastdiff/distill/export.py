"""What a run leaves behind: sample grids, the student as a diffusers folder, and a preset file naming it (JSON with
`fastdiff.Preset`'s fields; its `repo_id` relative to the file, so the folder can be moved whole).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import FastDiffError
from ..presets import Preset, register
from ..schedulers import build_scheduler
from .conditioning import NoiseSchedule, decode_latents, encode_captions, family_of
from .evaluation import image_rows
from .losses import predict_x0

__all__ = ["export_student", "load_preset_file", "one_step_latents", "sample_grid"]

PRESET_FILE = "preset.json"
PIPELINE_DIR = "pipeline"


@torch.no_grad()
def one_step_latents(
    pipe: Any, unet: Any, prompts: Sequence[str], noise: torch.Tensor, *, prediction_type: str | None = None
) -> torch.Tensor:
    """x̂0 of `unet` in one step from `noise` alone at t = 999: what a 1-step trailing Euler pipeline computes.
    `prediction_type`: what `unet` outputs (default: what `pipe`'s scheduler says, the teacher's)."""
    schedule = NoiseSchedule(pipe.scheduler.config)
    t = torch.full((len(prompts),), schedule.num_train_timesteps - 1, device=unet.device)
    x_t = schedule.noise(torch.zeros_like(noise), noise, t, zero_terminal=True)  # (B, 4, H/8, W/8): σ·ε alone
    cond = encode_captions(pipe, prompts, height=noise.shape[2] * 8, width=noise.shape[3] * 8)
    out = unet(x_t.to(unet.dtype), t, return_dict=False, **cond.unet_kwargs())[0].float()
    alpha, sigma = schedule.alpha_sigma(t)
    return predict_x0(out, x_t, alpha, sigma, prediction_type=prediction_type or schedule.prediction_type)


@torch.no_grad()
def sample_grid(
    pipe: Any,
    unet: Any,
    prompts: Sequence[str],
    *,
    height: int,
    width: int,
    seed: int = 0,
    prediction_type: str | None = None,
) -> Image.Image:
    """One-step samples of `unet` (outputs of `prediction_type`) from fixed noise (`seed`), one column per prompt."""
    shape = (len(prompts), unet.config.in_channels, height // 8, width // 8)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(unet.device)
    latents = one_step_latents(pipe, unet, prompts, noise, prediction_type=prediction_type)
    return image_rows([decode_latents(pipe.vae, latents)])


def export_student(
    pipe: Any,
    student: Any,
    out_dir: str | Path,
    *,
    name: str,
    height: int,
    width: int,
    license: str = "unknown",
    description: str = "",
    prediction_type: str | None = None,
) -> Path:
    """Write `pipe` with `student` as its UNet to `out_dir/pipeline` and its preset to `out_dir/preset.json`.

    The preset is the SDXL-Turbo recipe: 1-4 steps (1 by default), guidance 0, Euler with trailing spacing; for a
    student trained with `student_prediction="sample"` (pass it as `prediction_type`), Euler reading x̂0.
    """
    out = Path(out_dir)
    recipe = "euler-trailing-x0" if prediction_type == "sample" else "euler-trailing"
    teacher, scheduler = pipe.unet, pipe.scheduler
    pipe.register_modules(unet=student)
    if prediction_type == "sample":  # the folder's scheduler says its UNet outputs x̂0, as diffusers reads it: the
        # preset's own sampler (the teacher's PNDM, say, takes no x̂0 prediction)
        pipe.register_modules(scheduler=build_scheduler(recipe, scheduler))
    try:
        pipe.save_pretrained(out / PIPELINE_DIR)
    finally:
        pipe.register_modules(unet=teacher, scheduler=scheduler)
    fields = {
        "name": name,
        "family": family_of(pipe),
        "repo_id": PIPELINE_DIR,
        "steps": [1, 2, 3, 4],
        "default_steps": 1,
        "guidance_scale": 0.0,
        "height": height,
        "width": width,
        "scheduler": recipe,
        "license": license,
        "variant": None,  # float32 files only
        "description": description or f"ADD student of a {family_of(pipe)} teacher (fastdiff.distill)",
    }
    path = out / PRESET_FILE
    path.write_text(json.dumps(fields, indent=1) + "\n")
    return path


def load_preset_file(path: str | Path, *, overwrite: bool = False) -> Preset:
    """Read a preset file (as `export_student` writes it), register the preset and return it."""
    path = Path(path)
    if path.is_dir():
        path = path / PRESET_FILE
    try:
        fields = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FastDiffError(f"cannot read preset file {str(path)!r}: {err}") from None
    known = {f.name for f in dataclasses.fields(Preset)} - {"checkpoint"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise FastDiffError(f"preset file {str(path)!r}: unknown fields {unknown}; expected some of {sorted(known)}")
    folder = Path(fields.get("repo_id", ""))
    if not folder.is_absolute():
        folder = path.parent / folder
    if not (folder / "model_index.json").is_file():
        raise FastDiffError(f"preset file {str(path)!r}: {str(folder)!r} is not a diffusers folder")
    fields["repo_id"] = str(folder.resolve())
    for key in ("steps", "timesteps"):
        if fields.get(key) is not None:
            fields[key] = tuple(fields[key])
    try:
        preset = Preset(**fields)
    except TypeError as err:
        raise FastDiffError(f"preset file {str(path)!r}: {err}") from None
    return register(preset, overwrite=overwrite)
