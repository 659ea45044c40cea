"""One pipeline call for compatible requests: encode (cached: `EmbeddingCache`) → denoise (the diffusers pipeline's
own loop, so the scheduler recipe is diffusers') → decode, timed per stage."""

from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Sequence
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from .adapters import Embeddings, ModelAdapter
from .devices import make_clock
from .errors import warn
from .families import FamilySpec, family
from .openvino_engine import compile_log
from .presets import SHIPPED_MODELS, Preset
from .result import GenerationResult
from .validation import Request, input_size

__all__ = ["STAGES", "EmbeddingCache", "batch_key", "denoise", "generate_batch"]

STAGES = ("encode", "denoise", "decode")

Key = tuple[str, str | None, bool]


class EmbeddingCache:
    """Prompt embeddings by (prompt, negative prompt, guidance on), least recently used first out, with hit counters.

    The generator clears it whenever its weights change. Encoding runs under the generator's lock; the tokenizer lock
    keeps `warn_if_unread` (run in the caller's thread) from interleaving with an encode: a fast tokenizer keeps its
    truncation and padding settings between calls.
    """

    def __init__(
        self, maxsize: int, family: FamilySpec, *, device: torch.device, max_sequence_length: int | None
    ) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be ≥ 0")
        self.maxsize = maxsize
        self.family = family  # its adapter encodes, its prompt-length check warns
        self.device = device  # where prompts are encoded: the generator's
        self.max_sequence_length = max_sequence_length  # the preset's T5 prompt length (None: CLIP only)
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, Embeddings] = OrderedDict()
        self._tokenizer_lock = threading.Lock()

    def encode(self, pipe: Any, prompt: str, negative: str | None, guidance: bool) -> Embeddings:
        """The embeddings of one image's prompt: from the cache, else encoded by the family's adapter (and stored)."""
        key = (prompt, negative if guidance else None, guidance)
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        length = {} if self.max_sequence_length is None else {"max_sequence_length": self.max_sequence_length}
        with torch.no_grad(), self._tokenizer_lock:
            value = self.family.adapter.encode(pipe, prompt, negative, guidance=guidance, device=self.device, **length)
        if self.maxsize:
            self._entries[key] = value
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return value

    def warn_if_unread(self, pipe: Any, prompt: str, negative: str | None, guidance: bool) -> None:
        """On a cache miss only (no per-call tokenizing): warn when the text encoders will cut the prompt, or when a
        shipped toy model is given words it never saw (it knows only its `shapes` caption grammar)."""
        if (prompt, negative if guidance else None, guidance) in self._entries:
            return
        folder = Path(getattr(pipe, "name_or_path", None) or ".")
        if folder.parent == SHIPPED_MODELS:
            from .distill.shapes import EXAMPLE_CAPTION, unknown_words

            if unknown := unknown_words(prompt):
                warn(
                    f"{folder.name} is a toy model that knows only the words of its shapes captions "
                    f"('a [small|large] COLOR SHAPE [in the POSITION] on a COLOR background'), not "
                    f"{', '.join(map(repr, unknown))}. Try e.g. {EXAMPLE_CAPTION!r}."
                )
            return
        with self._tokenizer_lock:
            self.family.warn_if_truncated(pipe, prompt, self.max_sequence_length)

    def clear(self) -> None:
        """Forget every entry (the counters stay)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def batch_key(request: Request) -> tuple[Any, ...]:
    """Requests with equal keys can run as one pipeline call (the same steps, size, guidance and strength)."""
    size = input_size(request.image) if request.image is not None else (request.width, request.height)
    return (request.steps, size, request.guidance_scale, request.image is not None, request.strength)


def _noise(requests: Sequence[Request]) -> torch.Generator | list[torch.Generator]:
    """The call's own generator(s); else one CPU generator per image seeded `seed + i`: each image's noise alone."""
    own = requests[0].pass_through or {}
    if "generator" in own:
        return own["generator"]  # type: ignore[no-any-return]
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


def _per_image(
    requests: Sequence[Request], values: Sequence[torch.Tensor | list[torch.Tensor]]
) -> torch.Tensor | list[torch.Tensor]:
    """Each request's embedding repeated per image (as `num_images_per_prompt` would), joined along the batch: a
    tensor's dim 0, or one list where each image has its own tensor (Z-Image's variable-length prompts). Tensors of
    different token counts (Qwen-Image keeps each prompt's own, with its mask) are zero-padded at the end to the
    longest, as the pipelines pad a list of prompts."""
    rows = [t for r, value in zip(requests, values, strict=True) for t in value for _ in range(r.num_images)]
    if all(isinstance(value, torch.Tensor) for value in values):
        return pad_sequence(rows, batch_first=True)
    return rows


def denoise(
    preset: Preset,
    adapter: ModelAdapter,
    pipes: tuple[Any, Any],
    requests: Sequence[Request],
    embeds: Sequence[Embeddings],
) -> torch.Tensor:
    """Run the text-to-image (or image-to-image) pipeline of `pipes` once for all `requests`, with each request's
    embeddings repeated per image (as `num_images_per_prompt` would); returns the pipeline's latents
    ((B, 4, H/8, W/8) for a UNet, packed (B, N, C) for FLUX)."""
    first = requests[0]
    noise = _noise(requests)
    merged = {key: _per_image(requests, [e[key] for e in embeds]) for key in embeds[0]}
    spec = family(preset.family)
    kwargs: dict[str, Any] = {
        **merged,
        "true_cfg_scale" if spec.true_cfg else "guidance_scale": first.guidance_scale,
        "num_images_per_prompt": 1,
        "generator": noise,
        "output_type": "latent",
    }
    kwargs.update(spec.step_arguments(first.steps))
    kwargs.update(first.pass_through or {})
    if preset.eta is not None:
        kwargs["eta"] = preset.eta
    if first.image is None:
        pipe = pipes[0]
        kwargs.update(height=first.height, width=first.width, num_inference_steps=first.steps)
        if preset.timesteps is not None:
            kwargs["timesteps"] = list(preset.timesteps)
    else:
        assert first.strength is not None
        pipe = pipes[1]
        width, height = batch_key(first)[1]
        kwargs.update(spec.img2img_arguments(first.steps, first.strength, preset.timesteps, height=height, width=width))
        embedded = merged["prompt_embeds"]
        dtype = (embedded[0] if isinstance(embedded, list) else embedded).dtype  # diffusers' dtype for the image
        kwargs["image"] = _initial_latents(adapter, pipe, requests, noise, dtype)
    with torch.no_grad():
        out: torch.Tensor = pipe(**kwargs).images
    return out


@functools.cache
def _decode_takes_size(adapter_type: type[ModelAdapter]) -> bool:
    """Whether an adapter class's `decode` takes `height=`/`width=` (FLUX.1, SANA-Sprint, Qwen-Image): read once per
    class, not per call."""
    return "height" in inspect.signature(adapter_type.decode).parameters


def generate_batch(
    preset: Preset,
    adapter: ModelAdapter,
    pipes: tuple[Any, Any],
    requests: Sequence[Request],
    *,
    cache: EmbeddingCache,
    device: torch.device,
) -> list[GenerationResult]:
    """encode → denoise → decode for compatible `requests`, timed per stage (the batch's time, in each result). The
    seconds the CPU engine spent making a module ready for a new shape are timed apart ("compile"): the stages are
    what every later call at this shape takes."""
    clock = make_clock(device)
    with compile_log() as compiled:
        marks = [clock()]  # stage bounds: the clock less the compile seconds so far (none yet)
        embeds = [cache.encode(pipes[0], r.prompt, r.negative_prompt, r.guidance) for r in requests]
        marks.append(clock() - compiled.seconds)
        latents = denoise(preset, adapter, pipes, requests, embeds)
        marks.append(clock() - compiled.seconds)
        width, height = batch_key(requests[0])[1]
        size = {"height": height, "width": width} if _decode_takes_size(type(adapter)) else {}
        images = adapter.decode(pipes[0], latents, **size)
        marks.append(clock() - compiled.seconds)
    compiled.announce(f"{images[0].width}x{images[0].height}")
    timings = {stage: end - begin for stage, (begin, end) in zip(STAGES, pairwise(marks), strict=True)}
    timings["total"] = sum(timings.values())
    if compiled.seconds:
        timings["compile"] = compiled.seconds
    starts = accumulate((r.num_images for r in requests), initial=0)
    return [
        GenerationResult(
            images=images[start : start + r.num_images],
            seed=r.seed,
            steps=r.steps,
            preset=preset.name,
            guidance_scale=r.guidance_scale,
            height=images[0].height,  # one pipeline call: one size
            width=images[0].width,
            timings=dict(timings),
            image_seeds=r.image_seeds,
        )
        for start, r in zip(starts, requests, strict=False)  # starts has one more: the end
    ]
