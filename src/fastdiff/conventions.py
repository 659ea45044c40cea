"""diffusers' conventions in a call: its argument names, its generators and step callbacks, its array images.

A diffusers user's habits either work as they do in diffusers or end in a `FastDiffError` that names fastdiff's way,
never in a bare `TypeError` or a silently different image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch
from PIL import Image

from .errors import FastDiffError, did_you_mean

__all__ = [
    "DIFFUSERS_ARGUMENTS",
    "InputImage",
    "PassThrough",
    "check_array_image",
    "diffusers_hint",
    "input_size",
    "pass_through",
    "prompt_pairs",
    "translated",
]

# An img2img input as diffusers' `VaeImageProcessor` takes one: a PIL image, a float numpy array in [0, 1] (HWC or
# 1HWC), or a float tensor in [0, 1] (CHW or 1CHW).
InputImage: TypeAlias = Image.Image | np.ndarray | torch.Tensor

_RAW = "call gen.pipeline(...) directly (the diffusers pipeline, with the preset's scheduler)"
_EMBEDS = "fastdiff encodes the prompt itself (cached); pass the text as prompt=, gen.encode(prompt) returns embeddings"

# diffusers' call arguments that fastdiff's call spells differently or does another way: (fastdiff's name, None) for a
# pure rename, mapped because the value means exactly the same; (None, the way to do it here) for one that is
# refused, because fastdiff decides that part itself (noise, schedule, embeddings, output) and taking the value anyway
# would make another image than the one asked for, or ignore it silently.
DIFFUSERS_ARGUMENTS: dict[str, tuple[str | None, str | None]] = {
    # the same count, checked against the preset's allowed step counts
    "num_inference_steps": ("steps", None),
    # images per prompt in both, with a list of prompts too
    "num_images_per_prompt": ("num_images", None),
    # fastdiff returns PIL images and decodes itself, timing each stage
    "output_type": (None, "results are PIL images (result.images; np.asarray(image) for an array): drop output_type"),
    "return_dict": (None, "a call always returns a GenerationResult (result.images): drop return_dict"),
    # the embeddings are fastdiff's encode stage, cached per prompt
    "prompt_embeds": (None, _EMBEDS),
    "negative_prompt_embeds": (None, _EMBEDS),
    "pooled_prompt_embeds": (None, _EMBEDS),
    "negative_pooled_prompt_embeds": (None, _EMBEDS),
    # SDXL's second encoder gets the same text, as diffusers does when these are None
    "prompt_2": (None, f"fastdiff sends prompt= to both SDXL text encoders; for two prompts {_RAW}"),
    "negative_prompt_2": (None, f"fastdiff sends negative_prompt= to both text encoders; for two {_RAW}"),
    # the noise comes from seed= or generator=, so that a result can say how to make it again
    "latents": (
        None,
        f"fastdiff draws the noise from seed= or generator= (your own torch.Generator); for latents {_RAW}",
    ),
    # the preset is the model card's recipe: its scheduler, eta and timesteps
    "timesteps": (None, "the preset sets the timesteps (preset.timesteps); steps= picks among its step counts"),
    "sigmas": (None, "the preset's scheduler recipe sets the sigmas; steps= picks among its step counts"),
    "eta": (None, "the preset's scheduler recipe sets eta (preset.eta); register a preset with another to change it"),
    "guidance_rescale": (None, f"fastdiff runs the model card's guidance only; for guidance_rescale {_RAW}"),
    "clip_skip": (None, f"fastdiff encodes as the model card does; for clip_skip {_RAW}"),
    "cross_attention_kwargs": (None, f"for cross_attention_kwargs (a LoRA scale…) {_RAW}"),
    "denoising_start": (None, f"fastdiff runs the whole few-step schedule; for an ensemble of experts {_RAW}"),
    "denoising_end": (None, f"fastdiff runs the whole few-step schedule; for an ensemble of experts {_RAW}"),
    "ip_adapter_image": (None, f"fastdiff loads no IP-Adapter; {_RAW} after pipe.load_ip_adapter(...)"),
    "ip_adapter_image_embeds": (None, f"fastdiff loads no IP-Adapter; {_RAW} after pipe.load_ip_adapter(...)"),
    "mask_image": (None, "fastdiff does text-to-image and img2img (image=, strength=), not inpainting"),
    # SDXL's micro-conditioning: fastdiff conditions on the output size, as diffusers does by default
    **{
        name: (None, f"fastdiff conditions on the image size as diffusers does by default; for {name} {_RAW}")
        for name in (
            "original_size",
            "crops_coords_top_left",
            "target_size",
            "negative_original_size",
            "negative_crops_coords_top_left",
            "negative_target_size",
            "aesthetic_score",
            "negative_aesthetic_score",
        )
    },
    # diffusers' deprecated per-step callback
    "callback": (None, "pass callback_on_step_end=f, f(pipe, step, timestep, callback_kwargs) -> dict, as diffusers"),
    "callback_steps": (None, "callback_on_step_end= runs at every step; skip steps inside it (step % k)"),
}

# The defaults of fastdiff's own arguments that a rename may set: given with another value too, they conflict.
_RENAME_DEFAULTS: dict[str, object] = {"steps": None, "num_images": 1}


def diffusers_hint(name: str) -> str | None:
    """What fastdiff does with diffusers' argument `name`; None for a name that is not in the table."""
    rename, refusal = DIFFUSERS_ARGUMENTS.get(name, (None, None))
    if rename is not None:
        return f"diffusers' {name}= is {rename}= in fastdiff"
    return None if refusal is None else f"{name}= is a diffusers argument fastdiff does not take: {refusal}"


def translated(own: dict[str, Any], extra: dict[str, Any], *, accepted: Sequence[str]) -> dict[str, Any]:
    """`own` (a call's fastdiff arguments) with diffusers' renamed ones in `extra` mapped onto them; a refused or
    unknown name in `extra` raises a `FastDiffError` that names fastdiff's way (`accepted`: the call's own names)."""
    out = dict(own)
    for name, value in extra.items():
        rename, refusal = DIFFUSERS_ARGUMENTS.get(name, (None, None))
        if rename is not None:
            if out[rename] != _RENAME_DEFAULTS[rename]:
                raise FastDiffError(f"got both {rename}= and diffusers' {name}=; pass one ({rename}= is fastdiff's)")
            out[rename] = value
        elif refusal is not None:
            raise FastDiffError(diffusers_hint(name))
        else:
            raise FastDiffError(f"unexpected argument {name}={value!r}{did_you_mean(name, accepted)}")
    return out


def prompt_pairs(prompt: object, negative_prompt: object) -> list[tuple[object, object]]:
    """(prompt, negative prompt) per prompt of a call: one str, or a list of them as diffusers takes (with one
    negative prompt for all, or a list as long). The strs themselves are checked with the rest of the request."""
    if not isinstance(prompt, (list, tuple)):
        if isinstance(negative_prompt, (list, tuple)):
            raise FastDiffError(
                f"negative_prompt is a list of {len(negative_prompt)} for one prompt: pass a str, or a list of "
                "prompts as long"
            )
        return [(prompt, negative_prompt)]
    if not prompt:
        raise FastDiffError("prompt is an empty list: pass a str, or a list of at least one str")
    if isinstance(negative_prompt, (list, tuple)):
        if len(negative_prompt) != len(prompt):
            raise FastDiffError(
                f"negative_prompt has {len(negative_prompt)} entries for {len(prompt)} prompts: pass one per prompt, "
                "or one str for all"
            )
        return list(zip(prompt, negative_prompt, strict=True))
    return [(p, negative_prompt) for p in prompt]


@dataclass(frozen=True, eq=False)
class PassThrough:
    """What a call hands diffusers' pipeline as it is: its own generator(s), a step-end callback (diffusers'
    signature, `callback(pipe, step, timestep, callback_kwargs) -> dict`) and the tensors it reads. A call with any
    of them is one pipeline call of its own: a callback sees and may stop the whole batch, and one generator's
    draws follow one another across all the call's images."""

    generator: torch.Generator | list[torch.Generator] | None = None
    callback_on_step_end: Callable[..., Any] | None = None
    callback_on_step_end_tensor_inputs: list[str] | None = None

    def image_seeds(self, images: int) -> tuple[int, ...]:
        """Each image's generator's `initial_seed()` (what `manual_seed` set; one generator serves every image), or
        () without a generator."""
        if isinstance(self.generator, torch.Generator):
            return (self.generator.initial_seed(),) * images
        return tuple(g.initial_seed() for g in self.generator or ())

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The callback arguments of the pipeline call (the generator goes in with the noise)."""
        kwargs: dict[str, Any] = {}
        if self.callback_on_step_end is not None:
            kwargs["callback_on_step_end"] = self.callback_on_step_end
        if self.callback_on_step_end_tensor_inputs is not None:
            kwargs["callback_on_step_end_tensor_inputs"] = list(self.callback_on_step_end_tensor_inputs)
        return kwargs


def _check_generator(generator: object, *, seed: object, images: int, device: torch.device) -> None:
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
            "(prompts × num_images), "
            "or a single torch.Generator for all"
        )
    for g in generators:
        if g.device.type not in ("cpu", device.type):
            raise FastDiffError(
                f"a {g.device.type} generator cannot make noise for the {device.type} model: "
                "use torch.Generator('cpu') (the same image on every device)"
            )


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


def pass_through(
    arguments: dict[str, Any], *, images: int, device: torch.device, tensor_inputs: Sequence[str]
) -> PassThrough | None:
    """The checked pass-through arguments among a call's `arguments` (`tensor_inputs`: those its pipeline can
    hand a callback), or None when it has none (then its images may be coalesced with other calls')."""
    generator, callback = arguments["generator"], arguments["callback_on_step_end"]
    inputs = arguments["callback_on_step_end_tensor_inputs"]
    if generator is not None:
        _check_generator(generator, seed=arguments["seed"], images=images, device=device)
    _check_callback(callback, inputs, tensor_inputs)
    if generator is None and callback is None:
        return None
    return PassThrough(
        generator=list(generator) if isinstance(generator, tuple) else generator,
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=None if inputs is None else list(inputs),
    )


def input_size(image: InputImage) -> tuple[int, int]:
    """(width, height) of an img2img input: a PIL image, HWC/1HWC numpy, CHW/1CHW torch (diffusers' layouts)."""
    if isinstance(image, Image.Image):
        return image.size
    if isinstance(image, np.ndarray):
        return image.shape[-2], image.shape[-3]
    return image.shape[-1], image.shape[-2]


def check_array_image(image: np.ndarray | torch.Tensor) -> None:
    """An array img2img input as diffusers' image processor reads it: one RGB image, float, values in [0, 1]."""
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
