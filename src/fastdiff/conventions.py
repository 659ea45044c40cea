"""diffusers' call conventions: its argument names mapped or refused with fastdiff's way (`translated`), and a call
with a list of prompts, `generator=` and `callback_on_step_end=` turned into one checked `Request` per prompt
(`resolve_call`), each then checked against the preset by `fastdiff.validation`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from .errors import FastDiffError, did_you_mean
from .families import FAMILIES
from .validation import MAX_IMAGES, Request, check_seed

__all__ = ["REFUSED", "RENAMED", "diffusers_hint", "resolve_call", "translated"]

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
    "prompt_embeds_mask": _EMBEDS,
    "negative_prompt_embeds_mask": _EMBEDS,
    "true_cfg_scale": "pass guidance_scale=, which Qwen-Image's presets run as the pipeline's true_cfg_scale (CFG "
    "above 1); the other families' cards use no true CFG",
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


@functools.cache
def _pipeline_arguments() -> frozenset[str]:
    """The call arguments of every family's diffusers pipelines, text-to-image and img2img."""
    classes = [cls for spec in FAMILIES.values() for cls in spec.pipelines]
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
    make: Callable[..., Request], arguments: dict[str, Any], *, device: torch.device, tensor_inputs: Sequence[str]
) -> list[Request]:
    """A call's `arguments` (fastdiff's names, see `translated`) checked: one `Request` per prompt, in order, made
    by `make` (`resolve_request` with the generator's preset and sides). Image *k* of the call is that of `seed + k`
    (None: a random seed) or comes from the call's *k*-th generator."""
    shared = {
        k: arguments[k] for k in ("steps", "guidance_scale", "height", "width", "num_images", "image", "strength")
    }
    pairs = _prompt_pairs(arguments["prompt"], arguments["negative_prompt"])
    # seed 0 until every prompt is checked: the call's seed (or its generators) numbers all its images
    requests = [make(prompt, negative_prompt=negative, seed=0, **shared) for prompt, negative in pairs]
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
