"""Check one generation request against its preset: refuse what cannot work, warn about what is likely wrong."""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .conventions import InputImage, PassThrough, check_array_image, input_size
from .errors import FastDiffError, warn
from .presets import SHIPPED_MODELS, Preset, all_presets

__all__ = ["MAX_SIDE", "Request", "resolve_request"]

MAX_SIDE = 4096  # beyond this no few-step model has been trained, and one latent alone would fill a GPU
MAX_SEED = 2**63  # torch.Generator.manual_seed accepts up to 2**64, the batch rule adds num_images - 1
MAX_IMAGES = 64


@dataclass(frozen=True)
class Request:
    """One generation with every default filled in from the preset: what the result reports as used."""

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
    pass_through: PassThrough | None = None  # the call's own generator or step callback: it runs alone

    @property
    def guidance(self) -> bool:
        """Whether classifier-free guidance runs: diffusers only runs it for guidance_scale > 1."""
        return self.guidance_scale > 1.0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sibling_for(preset: Preset, steps: int) -> Preset | None:
    """The preset of the same family variant distilled for `steps` (sdxl-lightning-4step → -2step)."""
    stem = re.sub(r"\d+step", "#step", preset.name)
    for other in all_presets():
        if other.name != preset.name and re.sub(r"\d+step", "#step", other.name) == stem and steps in other.steps:
            return other
    return None


def check_steps(preset: Preset, steps: object) -> int:
    """Default or validate the step count against the preset's allowed set."""
    if steps is None:
        return preset.default_steps
    if not _is_int(steps):
        raise FastDiffError(f"steps must be an int, not {steps!r}; {preset.name} runs {preset.steps_label()} steps")
    assert isinstance(steps, int)
    if steps in preset.steps:
        return steps
    if len(preset.steps) == 1:
        hint = f"{preset.name} runs exactly {preset.steps[0]} steps (its checkpoint was distilled for that count)"
    else:
        hint = f"{preset.name} runs {preset.steps_label()} steps"
    sibling = _sibling_for(preset, steps)
    plural = "s" if steps != 1 else ""
    nearest = min(preset.steps, key=lambda allowed: (abs(allowed - steps), allowed))
    fix = f"; for {steps} step{plural} use {sibling.name}" if sibling else f"; use steps={nearest}"
    raise FastDiffError(f"{hint}, got steps={steps}{fix}")


def check_seed(seed: object, num_images: int) -> int:
    """A seed in [0, 2**63); None picks one at random (and the result reports it)."""
    if seed is None:
        return secrets.randbelow(2**32)
    if not _is_int(seed) or not 0 <= seed < MAX_SEED - num_images:  # type: ignore[operator]
        raise FastDiffError(f"seed must be an int in [0, 2**63), got {seed!r}; e.g. seed=0")
    assert isinstance(seed, int)
    return seed


def check_guidance(preset: Preset, guidance_scale: object) -> float:
    """A finite guidance ≥ 0; warn when a guidance-free model is given CFG."""
    if guidance_scale is None:
        return preset.guidance_scale
    if not _is_number(guidance_scale) or not math.isfinite(guidance_scale) or guidance_scale < 0:  # type: ignore[arg-type, operator]
        raise FastDiffError(
            f"guidance_scale must be a finite number ≥ 0, got {guidance_scale!r}; "
            f"{preset.name} uses guidance_scale={preset.guidance_scale}"
        )
    value = float(guidance_scale)  # type: ignore[arg-type]
    if preset.guidance_free and value > 1.0:
        warn(
            f"{preset.name} was distilled to run without guidance; guidance_scale={value} doubles the UNet work "
            f"and usually burns the image. Use guidance_scale={preset.guidance_scale}.",
        )
    return value


def size_step(vae_scale_factor: int) -> int:
    """What image sides must be a multiple of: the VAE factor, and never less than diffusers' own check of 8."""
    return math.lcm(8, vae_scale_factor)


def check_side(name: str, value: object, native: int, vae_scale_factor: int) -> int:
    """One image side: positive, a multiple of 8 and of the VAE factor, not absurd."""
    if value is None:
        return native
    if not _is_int(value) or value <= 0:  # type: ignore[operator]
        raise FastDiffError(f"{name} must be a positive int, got {value!r}; the preset's native {name} is {native}")
    assert isinstance(value, int)
    if value > MAX_SIDE:
        raise FastDiffError(f"{name}={value} is larger than {MAX_SIDE}; the preset's native {name} is {native}")
    step = size_step(vae_scale_factor)
    if value % step:
        lower = value // step * step
        upper = lower + step
        options = f"{lower} or {upper}" if lower else str(upper)
        raise FastDiffError(
            f"{name}={value} is not a multiple of {step} (diffusers and the VAE need it): use {options}"
        )
    return value


def _check_input_image(image: InputImage, vae_scale_factor: int, *, resize: bool) -> None:
    """An img2img input the pipeline can encode: at least one latent pixel, at most MAX_SIDE a side; resized to
    height/width only when it is a PIL image (diffusers' arrays are used at their own size)."""
    if not isinstance(image, Image.Image):
        check_array_image(image)
        if resize:
            raise FastDiffError(
                "height=/width= resize a PIL input image; an array image is used at its own size, as in diffusers: "
                "resize the array first, or drop height/width"
            )
    step = size_step(vae_scale_factor)
    width, height = input_size(image)
    if max(width, height) > MAX_SIDE or min(width, height) < step:
        raise FastDiffError(
            f"image is {width}x{height}; img2img takes sides from {step} to {MAX_SIDE} pixels: resize it "
            "first, or pass height=/width= to resize it to the size you want"
        )


def check_explicit_strength(preset: Preset, steps: int, strength: float) -> None:
    """Refuse a strength that a preset with explicit timesteps (DMD2) cannot honour: img2img can start only at one
    of its timesteps, so a strength far from all of them would be silently replaced by another."""
    if preset.timesteps is None:
        return
    from .schedulers import img2img_schedule

    _, mapped, timesteps = img2img_schedule(steps, strength, preset.timesteps)
    assert timesteps is not None
    start = timesteps[len(timesteps) - max(1, int(len(timesteps) * mapped))]
    if abs(start / 1000 - strength) > 0.15:
        usable = ", ".join(f"{round(t / 1000, 2):g}" for t in preset.timesteps)
        raise FastDiffError(
            f"{preset.name} starts img2img only at its timesteps {preset.timesteps}, so strength={strength} would "
            f"run as {start / 1000:.2f}; pass a strength near {usable}"
        )


def _warn_size(preset: Preset, height: int, width: int) -> None:
    ratio = (height * width) / (preset.height * preset.width)
    if not 0.3 <= ratio <= 2.0:
        warn(
            f"{preset.name} was trained at {preset.width}x{preset.height}; at {width}x{height} expect "
            "duplicated subjects (larger) or mush (smaller). Leave height/width unset for the native size.",
        )


def check_img2img(image: object, strength: object, default_strength: float) -> float | None:
    """img2img inputs: strength only with an image, and in (0, 1]."""
    if image is None:
        if strength is not None:
            raise FastDiffError("strength only applies to img2img; pass image=... as well, or drop strength")
        return None
    if not isinstance(image, (Image.Image, np.ndarray, torch.Tensor)):
        raise FastDiffError(
            f"image must be a PIL.Image.Image (or a float array in [0, 1], as in diffusers), not "
            f"{type(image).__name__}; use PIL.Image.open(path)"
        )
    if strength is None:
        return default_strength
    if not _is_number(strength) or not 0 < strength <= 1:  # type: ignore[operator]
        raise FastDiffError(f"strength must be in (0, 1], got {strength!r}; e.g. strength=0.5 keeps half the image")
    return float(strength)  # type: ignore[arg-type]


def _check_text(prompt: object, negative_prompt: object) -> None:
    if not isinstance(prompt, str):
        raise FastDiffError(
            f"prompt must be a str or a list of str, not {type(prompt).__name__}; for several images of one prompt "
            "use num_images=K"
        )
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise FastDiffError(f"negative_prompt must be a str or None, not {type(negative_prompt).__name__}")


def resolve_request(
    preset: Preset,
    *,
    vae_scale_factor: int,
    default_strength: float,
    prompt: object,
    steps: object,
    seed: object,
    guidance_scale: object,
    negative_prompt: object,
    height: object,
    width: object,
    num_images: object,
    image: object,
    strength: object,
) -> Request:
    """Validate every argument of a generation and fill the preset's defaults."""
    _check_text(prompt, negative_prompt)
    if not _is_int(num_images) or not 1 <= num_images <= MAX_IMAGES:  # type: ignore[operator]
        raise FastDiffError(f"num_images must be an int in [1, {MAX_IMAGES}], got {num_images!r}")
    assert isinstance(num_images, int)
    resolved_steps = check_steps(preset, steps)
    resolved_guidance = check_guidance(preset, guidance_scale)
    resolved_strength = check_img2img(image, strength, default_strength)
    if resolved_strength is not None:
        _check_input_image(image, vae_scale_factor, resize=height is not None or width is not None)  # type: ignore[arg-type]
        check_explicit_strength(preset, resolved_steps, resolved_strength)
    h = check_side("height", height, preset.height, vae_scale_factor)
    w = check_side("width", width, preset.width, vae_scale_factor)
    if image is None or height is not None or width is not None:
        _warn_size(preset, h, w)
    if negative_prompt and resolved_guidance <= 1.0:
        warn(
            f"negative_prompt is ignored at guidance_scale={resolved_guidance} (diffusers only runs CFG above 1); "
            "drop it, or raise guidance_scale on a model that supports CFG.",
        )
    return Request(
        prompt=prompt,  # type: ignore[arg-type]
        negative_prompt=negative_prompt,  # type: ignore[arg-type]
        steps=resolved_steps,
        seed=check_seed(seed, num_images),
        guidance_scale=resolved_guidance,
        height=h,
        width=w,
        num_images=num_images,
        image=image,  # type: ignore[arg-type]
        strength=resolved_strength,
    )


def call_images(requests: list[Request]) -> int:
    """The images of one call (its prompts × num_images), at most MAX_IMAGES: one call is one pipeline call."""
    total = sum(r.num_images for r in requests)
    if total > MAX_IMAGES:
        raise FastDiffError(
            f"{len(requests)} prompts × num_images={requests[0].num_images} is {total} images, more than "
            f"{MAX_IMAGES} in one call: use gen.map(prompts) for many prompts"
        )
    return total


def numbered(requests: list[Request], *, seed: object, passed: PassThrough | None) -> list[Request]:
    """A call's requests (one per prompt, in order) with their seeds and the call's pass-through: image *k* of the
    call is that of `seed + k` (None: a random seed), or has the call's *k*-th generator's `initial_seed()`."""
    total = call_images(requests)
    own = passed.image_seeds(total) if passed is not None else ()
    first = 0 if own else check_seed(seed, total)
    out, start = [], 0
    for r in requests:
        out.append(replace(r, seed=own[start] if own else first + start, pass_through=passed))
        start += r.num_images
    return out


def warn_prompt(pipe: Any, prompt: str) -> None:
    """Warn about what the model will not read of the prompt: the words a shipped toy model never saw (it knows
    only its `shapes` caption grammar, and its 16-token CLIP would say "too long" of any real prompt), else the
    tokens past CLIP's limit."""
    folder = Path(getattr(pipe, "name_or_path", None) or ".")
    if folder.parent == SHIPPED_MODELS:
        from .distill.shapes import EXAMPLE_CAPTION, unknown_words

        unknown = unknown_words(prompt)
        if unknown:
            warn(
                f"{folder.name} is a toy model that knows only the words of its shapes captions "
                f"('a [small|large] COLOR SHAPE [in the POSITION] on a COLOR background'), not "
                f"{', '.join(map(repr, unknown))}. Try e.g. {EXAMPLE_CAPTION!r}."
            )
        return
    warn_truncation(pipe.tokenizer, prompt)


def warn_truncation(tokenizer: Any, prompt: str) -> None:
    """Warn when CLIP will cut the prompt (diffusers only logs it, which notebooks and services never show)."""
    count = len(tokenizer(prompt, truncation=False).input_ids)
    if count > tokenizer.model_max_length:
        warn(
            f"the prompt is {count} tokens; CLIP reads only the first {tokenizer.model_max_length}, the rest "
            "is cut. Shorten the prompt (put what matters first).",
        )


def resized_input(request: Request) -> Request:
    """img2img with explicit height/width: the input image resized to that size first."""
    assert isinstance(request.image, Image.Image)  # an array image with height/width is refused earlier
    image = request.image.convert("RGB").resize((request.width, request.height), Image.Resampling.LANCZOS)
    return replace(request, image=image)


def check_flag(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse a non-bool for a True/False option (None too when `optional`)."""
    if not (isinstance(value, bool) or (optional and value is None)):
        raise FastDiffError(f"{name} must be {'True, False or None' if optional else 'True or False'}, got {value!r}")
