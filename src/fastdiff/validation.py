"""Check one prompt's request against its preset and fill in the preset's defaults (`resolve_request`).

What cannot work is refused with a `FastDiffError` that names the fix, before any model runs; what is likely wrong
gets a `FastDiffWarning`. How a whole call in diffusers' style becomes requests is `fastdiff.conventions`.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeGuard

import numpy as np
import torch
from PIL import Image

from .errors import FastDiffError, warn
from .families import family
from .presets import Preset, check_steps
from .schedulers import img2img_schedule

__all__ = [
    "MAX_IMAGES",
    "MAX_SIDE",
    "InputImage",
    "Request",
    "check_flag",
    "check_seed",
    "input_size",
    "resolve_request",
]

MAX_SIDE = 4096  # beyond this no few-step model has been trained, and one latent alone would fill a GPU
MAX_SEED = 2**63  # torch.Generator.manual_seed accepts up to 2**64, the batch rule adds num_images - 1
MAX_IMAGES = 64

# An img2img input as diffusers' `VaeImageProcessor` takes one: a PIL image, a float numpy array in [0, 1] (HWC or
# 1HWC), or a float tensor in [0, 1] (CHW or 1CHW).
InputImage: TypeAlias = Image.Image | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Request:
    """One prompt's images with every default filled in from the preset: what the result reports as used."""

    prompt: str
    negative_prompt: str | None
    steps: int
    seed: int
    guidance_scale: float
    height: int
    width: int
    num_images: int
    image: InputImage | None
    strength: float | None
    # diffusers' generator= and callback_on_step_end(_tensor_inputs)= of the call, handed to the pipeline as they
    # are: such a call runs alone (a callback sees and may stop the whole batch, one generator's draws follow on)
    pass_through: dict[str, Any] | None = field(default=None, compare=False)
    image_seeds: tuple[int, ...] = ()  # with generator=: each image's generator's `initial_seed()`
    cfg_above: float = 1.0  # the family's `FamilySpec.cfg_above`

    @property
    def guidance(self) -> bool:
        """Whether classifier-free guidance runs: diffusers runs it above the family's threshold (mostly 1)."""
        return self.guidance_scale > self.cfg_above


def check_flag(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse a non-bool for a True/False option (None too when `optional`)."""
    if not (isinstance(value, bool) or (optional and value is None)):
        raise FastDiffError(f"{name} must be {'True, False or None' if optional else 'True or False'}, got {value!r}")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_seed(seed: object, num_images: int) -> int:
    """A seed in [0, 2**63); None picks one at random (and the result reports it)."""
    if seed is None:
        return secrets.randbelow(2**32)
    if not _is_int(seed) or not 0 <= seed < MAX_SEED - num_images:
        raise FastDiffError(f"seed must be an int in [0, 2**63), got {seed!r}; e.g. seed=0")
    return seed


def check_guidance(preset: Preset, guidance_scale: object) -> float:
    """A finite guidance ≥ 0; warn when a guidance-free model is given CFG."""
    if guidance_scale is None:
        return preset.guidance_scale
    if not _is_number(guidance_scale) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise FastDiffError(
            f"guidance_scale must be a finite number ≥ 0, got {guidance_scale!r}; "
            f"{preset.name} uses guidance_scale={preset.guidance_scale}"
        )
    value = float(guidance_scale)
    kind = family(preset.family)
    if preset.guidance_free and value > kind.cfg_above:
        warn(
            f"{preset.name} was distilled to run without guidance; guidance_scale={value} {kind.guidance_effect}. "
            f"Use guidance_scale={preset.guidance_scale}.",
        )
    return value


def check_side(name: str, value: object, native: int, step: int, limit: int = MAX_SIDE) -> int:
    """One image side: positive, a multiple of `step` (8 and the VAE factor), at most `limit`."""
    if value is None:
        return native
    if not _is_int(value) or value <= 0:
        raise FastDiffError(f"{name} must be a positive int, got {value!r}; the preset's native {name} is {native}")
    if value > limit:
        raise FastDiffError(f"{name}={value} is larger than {limit}; the preset's native {name} is {native}")
    if value % step:
        lower = value // step * step
        options = f"{lower} or {lower + step}" if lower else str(step)
        raise FastDiffError(
            f"{name}={value} is not a multiple of {step} (diffusers and the VAE need it): use {options}"
        )
    return value


def input_size(image: InputImage) -> tuple[int, int]:
    """(width, height) of an img2img input: a PIL image, HWC/1HWC numpy, CHW/1CHW torch (diffusers' layouts)."""
    if isinstance(image, Image.Image):
        return image.size
    if isinstance(image, np.ndarray):
        return image.shape[-2], image.shape[-3]
    return image.shape[-1], image.shape[-2]


def _check_array_image(image: np.ndarray | torch.Tensor, *, resize: bool) -> None:
    """An array input as diffusers' image processor reads it: one RGB image, float, values in [0, 1], its own size."""
    numpy = isinstance(image, np.ndarray)
    layout = "HWC (or 1HWC)" if numpy else "CHW (or 1CHW)"
    channels = image.shape[-1] if numpy else (image.shape[-3] if image.ndim >= 3 else 0)
    if image.ndim not in (3, 4) or (image.ndim == 4 and image.shape[0] != 1) or channels != 3:
        raise FastDiffError(
            f"image is a {type(image).__name__} of shape {tuple(image.shape)}; as in diffusers, an array image is one "
            f"RGB image laid out {layout}: convert it (one call per input image; concurrent calls are batched)"
        )
    floating = np.issubdtype(image.dtype, np.floating) if isinstance(image, np.ndarray) else image.is_floating_point()
    if not floating:
        raise FastDiffError(
            f"image is a {image.dtype} array; as in diffusers, array images are floats in [0, 1]: pass image / 255 "
            "(or PIL.Image.fromarray(array) for uint8 HWC)"
        )
    values = torch.as_tensor(image)
    low, high = float(values.min()), float(values.max())
    if not 0.0 <= low <= high <= 1.0:  # a NaN fails too
        fix = "(image + 1) / 2" if low >= -1.0 and high <= 1.0 else "image / 255" if high <= 255 else "rescale it"
        raise FastDiffError(f"image values span [{low:g}, {high:g}]; array images are in [0, 1] as in diffusers: {fix}")
    if resize:
        raise FastDiffError(
            "height=/width= resize a PIL input image; an array image is used at its own size, as in diffusers: "
            "resize the array first, or drop height/width"
        )


def check_img2img(
    image: object,
    strength: object,
    *,
    default_strength: float | None,
    step: int,
    resize: bool,
    max_side: int = MAX_SIDE,
) -> float | None:
    """img2img inputs: strength only with an image, and in (0, 1]; an image the pipeline can encode; a family
    with an image-to-image pipeline (`default_strength` None: diffusers has none)."""
    if image is None:
        if strength is not None:
            raise FastDiffError("strength only applies to img2img; pass image=... as well, or drop strength")
        return None
    if default_strength is None:
        raise FastDiffError(
            "this model family has no image-to-image pipeline in diffusers; drop image= (and strength=), or pick "
            "a preset of a family with img2img (fastdiff presets lists them)"
        )
    if not isinstance(image, (Image.Image, np.ndarray, torch.Tensor)):
        raise FastDiffError(
            f"image must be a PIL.Image.Image (or a float array in [0, 1], as in diffusers), not "
            f"{type(image).__name__}; use PIL.Image.open(path)"
        )
    if strength is not None and (not _is_number(strength) or not 0 < strength <= 1):
        raise FastDiffError(f"strength must be in (0, 1], got {strength!r}; e.g. strength=0.5 keeps half the image")
    if not isinstance(image, Image.Image):
        _check_array_image(image, resize=resize)
    width, height = input_size(image)
    if max(width, height) > max_side or min(width, height) < step:
        raise FastDiffError(
            f"image is {width}x{height}; img2img takes sides from {step} to {max_side} pixels: resize it "
            "first, or pass height=/width= to resize it to the size you want"
        )
    return default_strength if strength is None else float(strength)


def check_explicit_strength(preset: Preset, steps: int, strength: float) -> None:
    """Refuse a strength far from every timestep of a preset with explicit ones (DMD2), where img2img starts."""
    if preset.timesteps is None:
        return
    _, mapped, timesteps = img2img_schedule(steps, strength, preset.timesteps)
    assert timesteps is not None
    start = timesteps[len(timesteps) - max(1, int(len(timesteps) * mapped))]
    if abs(start / 1000 - strength) > 0.15:
        usable = ", ".join(f"{round(t / 1000, 2):g}" for t in preset.timesteps)
        raise FastDiffError(
            f"{preset.name} starts img2img only at its timesteps {preset.timesteps}, so strength={strength} would "
            f"run as {start / 1000:.2f}; pass a strength near {usable}"
        )


def resolve_request(
    preset: Preset,
    *,
    vae_scale_factor: int,
    max_side: int = MAX_SIDE,
    prompt: object,
    steps: object = None,
    seed: object,
    guidance_scale: object,
    negative_prompt: object = None,
    height: object,
    width: object,
    num_images: object,
    image: object,
    strength: object = None,
) -> Request:
    """One prompt's arguments checked against the preset, with every default filled in (`vae_scale_factor`: what
    sides must be multiples of; `max_side`: the longest side the denoiser takes)."""
    if not isinstance(prompt, str):
        raise FastDiffError(
            f"prompt must be a str or a list of str, not {type(prompt).__name__}; for several images of one prompt "
            "use num_images=K"
        )
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise FastDiffError(f"negative_prompt must be a str or None, not {type(negative_prompt).__name__}")
    if not _is_int(num_images) or not 1 <= num_images <= MAX_IMAGES:
        raise FastDiffError(f"num_images must be an int in [1, {MAX_IMAGES}], got {num_images!r}")
    kind = family(preset.family)
    resolved_steps = check_steps(preset, steps)
    resolved_guidance = check_guidance(preset, guidance_scale)
    step = math.lcm(8, vae_scale_factor)  # the VAE factor, and never less than diffusers' own check of 8
    resize = height is not None or width is not None
    resolved_strength = check_img2img(
        image, strength, default_strength=kind.default_strength, step=step, resize=resize, max_side=max_side
    )
    if resolved_strength is not None:
        check_explicit_strength(preset, resolved_steps, resolved_strength)
    h = check_side("height", height, preset.height, step, max_side)
    w = check_side("width", width, preset.width, step, max_side)
    ratio = (h * w) / (preset.height * preset.width)
    # a family with resolution binning generates at its native size whatever the size asked
    if (image is None or resize) and not kind.resolution_binning and not 0.3 <= ratio <= 2.0:
        warn(
            f"{preset.name} was trained at {preset.width}x{preset.height}; at {w}x{h} expect "
            "duplicated subjects (larger) or mush (smaller). Leave height/width unset for the native size.",
        )
    cfg_above = kind.cfg_above
    if negative_prompt and resolved_guidance <= cfg_above:
        cfg = f"only runs CFG above {cfg_above:g}" if math.isfinite(cfg_above) else f"runs no CFG for {preset.name}"
        warn(
            f"negative_prompt is ignored at guidance_scale={resolved_guidance} (diffusers {cfg}); "
            "drop it, or raise guidance_scale on a model that supports CFG.",
        )
    if isinstance(image, Image.Image) and resize:
        image = image.convert("RGB").resize((w, h), Image.Resampling.LANCZOS)
    return Request(
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=resolved_steps,
        seed=check_seed(seed, num_images),
        guidance_scale=resolved_guidance,
        height=h,
        width=w,
        num_images=num_images,
        image=image,  # type: ignore[arg-type]
        strength=resolved_strength,
        cfg_above=cfg_above,
    )
