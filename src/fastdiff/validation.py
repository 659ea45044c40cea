"""Check a call against its preset and diffusers' conventions, and fill in the preset's defaults.

What cannot work is refused with a `FastDiffError` that names the fix, before any model runs; what is likely wrong
gets a `FastDiffWarning`; a diffusers habit works as in diffusers or is refused with fastdiff's way.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import numpy as np
import torch
from PIL import Image

from .errors import FastDiffError, did_you_mean, warn
from .families import FAMILIES, family
from .presets import Preset, all_presets

__all__ = [
    "MAX_SIDE",
    "REFUSED",
    "RENAMED",
    "InputImage",
    "Request",
    "check_flag",
    "diffusers_hint",
    "input_size",
    "resolve_call",
    "resolve_request",
]

MAX_SIDE = 4096  # beyond this no few-step model has been trained, and one latent alone would fill a GPU
MAX_SEED = 2**63  # torch.Generator.manual_seed accepts up to 2**64, the batch rule adds num_images - 1
MAX_IMAGES = 64

# An img2img input as diffusers' `VaeImageProcessor` takes one: a PIL image, a float numpy array in [0, 1] (HWC or
# 1HWC), or a float tensor in [0, 1] (CHW or 1CHW).
InputImage: TypeAlias = Image.Image | np.ndarray | torch.Tensor

_RAW = "call gen.pipeline(...) directly (the diffusers pipeline, with the preset's scheduler)"
_EMBEDS = "fastdiff encodes the prompt itself (cached); pass the text as prompt=, gen.encode(prompt) returns embeddings"

# diffusers' names of fastdiff's own arguments: name → (fastdiff's name, its default, which the rename replaces).
RENAMED: dict[str, tuple[str, object]] = {
    "num_inference_steps": ("steps", None),
    "num_images_per_prompt": ("num_images", 1),
}

# diffusers' call arguments that fastdiff refuses, with its way: fastdiff decides that part itself (noise, schedule,
# embeddings, output), and taking the value would make another image than the one asked for. The pipelines' other
# arguments (guidance_rescale, clip_skip, SDXL's micro-conditioning…) are refused with `_RAW`.
REFUSED: dict[str, str] = {
    "output_type": "results are PIL images (result.images; np.asarray(image) for an array): drop output_type",
    "return_dict": "a call always returns a GenerationResult (result.images): drop return_dict",
    "prompt_embeds": _EMBEDS,
    "negative_prompt_embeds": _EMBEDS,
    "pooled_prompt_embeds": _EMBEDS,
    "negative_pooled_prompt_embeds": _EMBEDS,
    "prompt_2": f"fastdiff sends prompt= to both SDXL text encoders; for two prompts {_RAW}",
    "negative_prompt_2": f"fastdiff sends negative_prompt= to both text encoders; for two {_RAW}",
    "latents": f"fastdiff draws the noise from seed= or generator= (your own torch.Generator); for latents {_RAW}",
    "timesteps": "the preset sets the timesteps (preset.timesteps); steps= picks among its step counts",
    "sigmas": "the preset's scheduler recipe sets the sigmas; steps= picks among its step counts",
    "eta": "the preset's scheduler recipe sets eta (preset.eta); register a preset with another to change it",
    "cross_attention_kwargs": f"for a LoRA's scale use gen.load_lora(lora, scale=...); for the rest {_RAW}",
    "ip_adapter_image": f"fastdiff loads no IP-Adapter; {_RAW} after pipe.load_ip_adapter(...)",
    "mask_image": "fastdiff does text-to-image and img2img (image=, strength=), not inpainting",
    "callback": "pass callback_on_step_end=f, f(pipe, step, timestep, callback_kwargs) -> dict, as diffusers",
    "callback_steps": "callback_on_step_end= runs at every step; skip steps inside it (step % k)",
}


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

    @property
    def guidance(self) -> bool:
        """Whether classifier-free guidance runs: diffusers only runs it for guidance_scale > 1."""
        return self.guidance_scale > 1.0


@functools.cache
def _pipeline_arguments() -> frozenset[str]:
    """The call arguments of every family's diffusers pipelines, text-to-image and img2img."""
    classes = [cls for spec in FAMILIES.values() for cls in (spec.pipeline, spec.img2img)]
    return frozenset(name for cls in classes for name in inspect.signature(cls.__call__).parameters)


def diffusers_hint(name: str) -> str | None:
    """What fastdiff does with diffusers' argument `name`; None for a name that is not diffusers'."""
    if name in RENAMED:
        return f"diffusers' {name}= is {RENAMED[name][0]}= in fastdiff"
    other = f"fastdiff runs the model card's recipe; for {name} {_RAW}" if name in _pipeline_arguments() else None
    reason = REFUSED.get(name, other)
    return None if reason is None else f"{name}= is a diffusers argument fastdiff does not take: {reason}"


def translated(own: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`own` (a call's arguments) with diffusers' renamed ones in `extra` mapped onto them; others are refused."""
    out = dict(own)
    for name, value in extra.items():
        if name not in RENAMED:
            raise FastDiffError(
                diffusers_hint(name) or f"unexpected argument {name}={value!r}{did_you_mean(name, own)}"
            )
        rename, default = RENAMED[name]
        if out[rename] != default:
            raise FastDiffError(f"got both {rename}= and diffusers' {name}=; pass one ({rename}= is fastdiff's)")
        out[rename] = value
    return out


def check_flag(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse a non-bool for a True/False option (None too when `optional`)."""
    if not (isinstance(value, bool) or (optional and value is None)):
        raise FastDiffError(f"{name} must be {'True, False or None' if optional else 'True or False'}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sibling_for(preset: Preset, steps: int) -> Preset | None:
    """The preset of the same family variant distilled for `steps` (sdxl-lightning-4step → -2step)."""
    stem = re.sub(r"\d+step", "#step", preset.name)
    same = (p for p in all_presets() if re.sub(r"\d+step", "#step", p.name) == stem and steps in p.steps)
    return next((p for p in same if p.name != preset.name), None)


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
        unet = family(preset.family).denoiser == "unet"  # FLUX.1 [schnell]'s transformer has no guidance input
        effect = "doubles the UNet work and usually burns the image" if unet else "is ignored by its transformer"
        warn(
            f"{preset.name} was distilled to run without guidance; guidance_scale={value} {effect}. "
            f"Use guidance_scale={preset.guidance_scale}.",
        )
    return value


def check_side(name: str, value: object, native: int, step: int) -> int:
    """One image side: positive, a multiple of `step` (8 and the VAE factor), not absurd."""
    if value is None:
        return native
    if not _is_int(value) or value <= 0:  # type: ignore[operator]
        raise FastDiffError(f"{name} must be a positive int, got {value!r}; the preset's native {name} is {native}")
    assert isinstance(value, int)
    if value > MAX_SIDE:
        raise FastDiffError(f"{name}={value} is larger than {MAX_SIDE}; the preset's native {name} is {native}")
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


def check_img2img(image: object, strength: object, *, default_strength: float, step: int, resize: bool) -> float | None:
    """img2img inputs: strength only with an image, and in (0, 1]; an image the pipeline can encode."""
    if image is None:
        if strength is not None:
            raise FastDiffError("strength only applies to img2img; pass image=... as well, or drop strength")
        return None
    if not isinstance(image, (Image.Image, np.ndarray, torch.Tensor)):
        raise FastDiffError(
            f"image must be a PIL.Image.Image (or a float array in [0, 1], as in diffusers), not "
            f"{type(image).__name__}; use PIL.Image.open(path)"
        )
    if strength is not None and (not _is_number(strength) or not 0 < strength <= 1):  # type: ignore[operator]
        raise FastDiffError(f"strength must be in (0, 1], got {strength!r}; e.g. strength=0.5 keeps half the image")
    if not isinstance(image, Image.Image):
        _check_array_image(image, resize=resize)
    width, height = input_size(image)
    if max(width, height) > MAX_SIDE or min(width, height) < step:
        raise FastDiffError(
            f"image is {width}x{height}; img2img takes sides from {step} to {MAX_SIDE} pixels: resize it "
            "first, or pass height=/width= to resize it to the size you want"
        )
    return default_strength if strength is None else float(strength)  # type: ignore[arg-type]


def check_explicit_strength(preset: Preset, steps: int, strength: float) -> None:
    """Refuse a strength far from every timestep of a preset with explicit ones (DMD2), where img2img starts."""
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


def resolve_request(
    preset: Preset,
    *,
    vae_scale_factor: int,
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
    """One prompt's arguments checked against the preset, with every default filled in."""
    if not isinstance(prompt, str):
        raise FastDiffError(
            f"prompt must be a str or a list of str, not {type(prompt).__name__}; for several images of one prompt "
            "use num_images=K"
        )
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise FastDiffError(f"negative_prompt must be a str or None, not {type(negative_prompt).__name__}")
    if not _is_int(num_images) or not 1 <= num_images <= MAX_IMAGES:  # type: ignore[operator]
        raise FastDiffError(f"num_images must be an int in [1, {MAX_IMAGES}], got {num_images!r}")
    assert isinstance(num_images, int)
    resolved_steps = check_steps(preset, steps)
    resolved_guidance = check_guidance(preset, guidance_scale)
    step = math.lcm(8, vae_scale_factor)  # the VAE factor, and never less than diffusers' own check of 8
    resize = height is not None or width is not None
    default_strength = family(preset.family).default_strength
    resolved_strength = check_img2img(image, strength, default_strength=default_strength, step=step, resize=resize)
    if resolved_strength is not None:
        check_explicit_strength(preset, resolved_steps, resolved_strength)
    h = check_side("height", height, preset.height, step)
    w = check_side("width", width, preset.width, step)
    ratio = (h * w) / (preset.height * preset.width)
    if (image is None or resize) and not 0.3 <= ratio <= 2.0:
        warn(
            f"{preset.name} was trained at {preset.width}x{preset.height}; at {w}x{h} expect "
            "duplicated subjects (larger) or mush (smaller). Leave height/width unset for the native size.",
        )
    if negative_prompt and resolved_guidance <= 1.0:
        warn(
            f"negative_prompt is ignored at guidance_scale={resolved_guidance} (diffusers only runs CFG above 1); "
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
    )


def _prompt_pairs(prompt: object, negative_prompt: object) -> list[tuple[object, object]]:
    """(prompt, negative prompt) per prompt: one str, or a list with one negative prompt for all or a list as long."""
    prompts = list(prompt) if isinstance(prompt, (list, tuple)) else [prompt]
    if not prompts:
        raise FastDiffError("prompt is an empty list: pass a str, or a list of at least one str")
    negatives = (
        list(negative_prompt) if isinstance(negative_prompt, (list, tuple)) else [negative_prompt] * len(prompts)
    )
    if len(negatives) != len(prompts):
        for_what = f"{len(prompts)} prompts" if isinstance(prompt, (list, tuple)) else "one prompt"
        raise FastDiffError(
            f"negative_prompt has {len(negatives)} entries for {for_what}: pass one str for all, or one per prompt"
        )
    return list(zip(prompts, negatives, strict=True))


def _generator_seeds(generator: object, *, seed: object, images: int, device: torch.device) -> tuple[int, ...]:
    """Each image's generator's `initial_seed()`, once `generator` is checked to make `images` images on `device`."""
    if seed is not None:
        raise FastDiffError(
            "pass seed= or generator=, not both: generator=torch.Generator('cpu').manual_seed(7) makes the seed=7 image"
        )
    one = isinstance(generator, torch.Generator)
    generators = [generator] if one else generator
    if not isinstance(generators, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generators):
        raise FastDiffError(
            f"generator must be a torch.Generator or a list of them, not {type(generator).__name__}; "
            "e.g. generator=torch.Generator('cpu').manual_seed(0)"
        )
    if not one and len(generators) != images:
        raise FastDiffError(
            f"got {len(generators)} generators for {images} image{'s' if images != 1 else ''}: pass one per image "
            "(prompts × num_images), or a single torch.Generator for all"
        )
    for g in generators:
        if g.device.type not in ("cpu", device.type):
            raise FastDiffError(
                f"a {g.device.type} generator cannot make noise for the {device.type} model: "
                "use torch.Generator('cpu') (the same image on every device)"
            )
    return tuple(g.initial_seed() for g in (generators * images if one else generators))


def _check_callback(callback: object, tensor_inputs: object, allowed: Sequence[str]) -> None:
    if callback is not None and not callable(callback):
        raise FastDiffError(
            f"callback_on_step_end must be callable, not {type(callback).__name__}: "
            "f(pipe, step, timestep, callback_kwargs) -> dict, as in diffusers"
        )
    if tensor_inputs is None:
        return
    if callback is None:
        raise FastDiffError("callback_on_step_end_tensor_inputs needs callback_on_step_end=; pass it, or drop both")
    if not isinstance(tensor_inputs, (list, tuple)) or not all(isinstance(n, str) for n in tensor_inputs):
        raise FastDiffError(f"callback_on_step_end_tensor_inputs must be a list of names, e.g. {list(allowed)}")
    unknown = [n for n in tensor_inputs if n not in allowed]
    if unknown:
        raise FastDiffError(f"callback_on_step_end_tensor_inputs: this pipeline passes {list(allowed)}, not {unknown}")


def resolve_call(
    preset: Preset,
    arguments: dict[str, Any],
    *,
    vae_scale_factor: int,
    device: torch.device,
    tensor_inputs: Sequence[str],
) -> list[Request]:
    """A call's `arguments` (fastdiff's names, see `translated`) checked: one `Request` per prompt, in order. Image
    *k* of the call is that of `seed + k` (None: a random seed) or comes from the call's *k*-th generator."""
    shared = {k: arguments[k] for k in ("steps", "guidance_scale", "height", "width", "num_images", "image")}
    requests = [
        # seed 0 until every prompt is checked: the call's seed (or its generators) numbers all its images
        resolve_request(
            preset,
            vae_scale_factor=vae_scale_factor,
            prompt=prompt,
            negative_prompt=negative,
            seed=0,
            strength=arguments["strength"],
            **shared,
        )
        for prompt, negative in _prompt_pairs(arguments["prompt"], arguments["negative_prompt"])
    ]
    n = requests[0].num_images  # the same for every prompt
    total = len(requests) * n
    if total > MAX_IMAGES:  # one call is one pipeline call
        raise FastDiffError(
            f"{len(requests)} prompts × num_images={n} is {total} images, more than "
            f"{MAX_IMAGES} in one call: use gen.map(prompts) for many prompts"
        )
    _check_callback(arguments["callback_on_step_end"], arguments["callback_on_step_end_tensor_inputs"], tensor_inputs)
    own: tuple[int, ...] = ()
    if arguments["generator"] is not None:
        own = _generator_seeds(arguments["generator"], seed=arguments["seed"], images=total, device=device)
    first = 0 if own else check_seed(arguments["seed"], total)
    names = ("generator", "callback_on_step_end", "callback_on_step_end_tensor_inputs")
    passed = {k: list(v) if isinstance(v, tuple) else v for k in names if (v := arguments[k]) is not None}
    return [
        replace(r, seed=own[i] if own else first + i, pass_through=passed or None, image_seeds=own[i : i + n])
        for i, r in zip(range(0, total, n), requests, strict=True)
    ]
