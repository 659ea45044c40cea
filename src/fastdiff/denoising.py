"""One pipeline call for a batch of compatible requests: per-image embeddings, seeds and (img2img) latents in,
final latents out, through the diffusers pipeline's own denoising loop (so the scheduler recipe is diffusers')."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import torch

from .adapters import Embeddings, ModelAdapter
from .conventions import input_size
from .families import family
from .openvino_engine import compile_log
from .presets import Preset
from .result import GenerationResult
from .validation import Request

__all__ = ["STAGES", "batch_key", "denoise", "generate_batch", "per_image_embeddings"]

STAGES = ("encode", "denoise", "decode")


def batch_key(request: Request) -> tuple[Any, ...]:
    """Requests with equal keys can run as one pipeline call (the same steps, size, guidance and strength)."""
    size = input_size(request.image) if request.image is not None else (request.width, request.height)
    return (request.steps, size, request.guidance_scale, request.image is not None, request.strength)


def per_image_embeddings(requests: Sequence[Request], embeds: Sequence[Embeddings]) -> Embeddings:
    """Each request's embeddings repeated once per image, stacked: what `num_images_per_prompt` would build."""
    return {
        key: torch.cat([e[key].repeat_interleave(r.num_images, dim=0) for r, e in zip(requests, embeds, strict=True)])
        for key in embeds[0]
    }


def _noise(requests: Sequence[Request]) -> torch.Generator | list[torch.Generator]:
    """The call's own generator(s), as given; else one CPU generator per image seeded `seed + i`, so that each image
    gets the noise it gets alone (a single one for a single image, as diffusers is called with one)."""
    own = requests[0].pass_through
    if own is not None and own.generator is not None:
        return own.generator
    seeded = [torch.Generator("cpu").manual_seed(r.seed + i) for r in requests for i in range(r.num_images)]
    return seeded[0] if len(seeded) == 1 else seeded


def _initial_latents(
    adapter: ModelAdapter,
    pipe: Any,
    requests: Sequence[Request],
    noise: torch.Generator | list[torch.Generator],
    dtype: torch.dtype,
) -> torch.Tensor:
    """img2img's encoded input, one per image (B, 4, H/8, W/8), sampled as diffusers' `prepare_latents` does: with
    a list of generators each image's VAE sample from its own; with one generator, one sample repeated."""
    if isinstance(noise, torch.Generator):
        total = sum(r.num_images for r in requests)
        one = adapter.encode_image(pipe, [requests[0].image], [noise], dtype)  # type: ignore[list-item]
        return torch.cat([one] * total)  # as diffusers: cat keeps the VAE output's memory format, which the UNet sees
    images = [r.image for r in requests for _ in range(r.num_images)]
    return adapter.encode_image(pipe, images, noise, dtype)  # type: ignore[arg-type]


def denoise(
    preset: Preset,
    adapter: ModelAdapter,
    pipes: tuple[Any, Any],
    requests: Sequence[Request],
    embeds: Sequence[Embeddings],
) -> torch.Tensor:
    """Run the text-to-image (or image-to-image) pipeline of `pipes` once for all `requests`; image *i* of a
    request is drawn from its own CPU generator seeded `seed + i`, or from the call's own generator(s) with the
    call's step callback (`Request.pass_through`). Returns the pipeline's latents ((B, 4, H/8, W/8) for a UNet)."""
    first = requests[0]
    noise = _noise(requests)
    merged = per_image_embeddings(requests, embeds)
    kwargs: dict[str, Any] = {
        **merged,
        "guidance_scale": first.guidance_scale,
        "num_images_per_prompt": 1,
        "generator": noise,
        "output_type": "latent",
    }
    if first.pass_through is not None:
        kwargs.update(first.pass_through.pipeline_kwargs())
    if preset.eta is not None:
        kwargs["eta"] = preset.eta
    timesteps = preset.timesteps
    text2img, img2img = pipes
    if first.image is None:
        pipe = text2img
        kwargs.update(height=first.height, width=first.width, num_inference_steps=first.steps)
        if timesteps is not None:
            kwargs["timesteps"] = list(timesteps)
    else:
        assert first.strength is not None
        pipe = img2img
        width, height = batch_key(first)[1]
        arguments = family(preset.family).img2img_arguments
        kwargs.update(arguments(first.steps, first.strength, timesteps, height=height, width=width))
        kwargs["image"] = _initial_latents(adapter, pipe, requests, noise, merged["prompt_embeds"].dtype)
    with torch.no_grad():
        out: torch.Tensor = pipe(**kwargs).images
    return out


def generate_batch(
    preset: Preset,
    adapter: ModelAdapter,
    pipes: tuple[Any, Any],
    requests: Sequence[Request],
    *,
    embed: Callable[[Request], Embeddings],
    clock: Callable[[], float],
) -> list[GenerationResult]:
    """encode → denoise → decode for compatible `requests`, timed per stage (the batch's time, in each result).

    The seconds the CPU engine spent making a module ready for a new shape are timed apart ("compile"), out of the
    stages and the total: those are the image's own time, what every later call at this shape takes."""
    with compile_log() as compiled:
        marks = [(clock(), 0.0)]  # (clock, compile seconds so far) at each stage's end
        embeds = [embed(r) for r in requests]
        marks.append((clock(), compiled.seconds))
        latents = denoise(preset, adapter, pipes, requests, embeds)
        marks.append((clock(), compiled.seconds))
        width, height = batch_key(requests[0])[1]
        size = {"height": height, "width": width} if latents.dim() == 3 else {}  # packed (B, N, C) latents: no size
        images = adapter.decode(pipes[0], latents, **size)
        marks.append((clock(), compiled.seconds))
    compiled.announce(f"{images[0].width}x{images[0].height}")
    timings = {
        stage: (end - begin) - (compiled_by_end - compiled_by_begin)
        for stage, ((begin, compiled_by_begin), (end, compiled_by_end)) in zip(STAGES, pairwise(marks), strict=True)
    }
    timings["total"] = sum(timings.values())
    if compiled.seconds:
        timings["compile"] = compiled.seconds
    own = requests[0].pass_through  # a call with its own generators runs alone: they name its images' seeds
    image_seeds = own.image_seeds(len(images)) if own is not None else ()
    results, first = [], 0
    for r in requests:
        mine, seeds = images[first : first + r.num_images], image_seeds[first : first + r.num_images]
        first += r.num_images
        results.append(
            GenerationResult(
                images=mine,
                seed=r.seed,
                steps=r.steps,
                preset=preset.name,
                guidance_scale=r.guidance_scale,
                height=mine[0].height,
                width=mine[0].width,
                timings=dict(timings),
                image_seeds=seeds,
            )
        )
    return results
