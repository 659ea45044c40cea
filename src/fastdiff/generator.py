"""`FewStepGenerator`: a preset composed with a diffusers pipeline and the adapter of its family.

A call reads: validate (diffusers' call conventions, `conventions`; each prompt against the preset, `validation`)
→ encode (cached), denoise and decode (`denoising`) → `GenerationResult` (`result`). Building one:
`loading`; changing its weights: `checkpoints`, `weights`. Its calls take turns on one lock; what runs around it
(coalescing concurrent calls, `CoalescingGenerator`; `map`; the live session; bulk runs) is `fastdiff.serving`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from . import loading
from . import presets as preset_table
from .adapters import Embeddings
from .checkpoints import apply_lora, load_denoiser_checkpoint, lora_file
from .conventions import resolve_call, translated
from .denoising import EmbeddingCache, batch_key, generate_batch
from .devices import resolve_device
from .errors import FastDiffError, warn
from .families import family
from .openvino_engine import expected_shapes, openvino_forwards
from .presets import Preset
from .recipe import Optimizations, Recipe, decide_recipe
from .result import GenerationResult, joined
from .serving.coalescing import BatchStats
from .serving.mapping import map_prompts
from .validation import InputImage, Request, check_flag, resolve_request
from .weights import WeightsIdentity, file_identity

__all__ = ["FewStepGenerator"]

log = logging.getLogger(__name__)


class FewStepGenerator:
    """Run a few-step model exactly as its model card does, with checked inputs and per-stage timings:
    `gen("a cat", steps=1, seed=0).images[0]`. `optimizations` is what was asked, `recipe` what was applied."""

    def __init__(
        self,
        preset: Preset,
        pipe: Any,
        *,
        optimizations: Optimizations | Recipe | None = None,
        weights: WeightsIdentity | None = None,
    ) -> None:
        self.preset = preset
        self.pipeline = pipe
        # The device the pipeline computes on (with `enable_model_cpu_offload`, the accelerator, not the CPU), read
        # once: diffusers' `_execution_device` walks every module (12 ms for SDXL), too slow for each call.
        self.device = torch.device(pipe._execution_device)
        kind = family(preset.family)
        self.recipe = decide_recipe(optimizations or "none", self.device, family=kind)  # a Recipe is kept as decided
        self.optimizations = self.recipe.optimizations
        self.adapter = kind.adapter
        self.weights = weights or WeightsIdentity(None)  # what every cache derived from the weights keys on
        self.embedding_cache = EmbeddingCache(
            self.recipe.embedding_cache_size, kind, device=self.device, max_sequence_length=preset.max_sequence_length
        )
        self._adapters: dict[str, float] = {}  # unfused LoRAs of `load_lora(fuse=False)` and their scales
        self._img2img = kind.over(pipe, img2img=True)
        # what image sides must be multiples of (VAE × patch), and the longest the denoiser takes
        self._sides = {"vae_scale_factor": kind.size_multiple(pipe), "max_side": kind.max_side(pipe)}
        self._lock = threading.RLock()  # one pipeline call at a time: diffusers pipelines keep per-call state
        self._shapes: set[tuple[int, int, int]] = set()  # (height, width, UNet batch) seen, for torch.compile
        self._shapes_lock = threading.Lock()
        for p in (pipe, self._img2img):
            if p is not None:
                p.set_progress_bar_config(disable=True)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the denoiser's weights (the UNet, or FLUX's transformer)."""
        return getattr(self.pipeline, family(self.preset.family).denoiser).dtype  # type: ignore[no-any-return]

    @classmethod
    def from_preset(
        cls,
        preset: str | Preset,
        *,
        source: str | Path | None = None,
        checkpoint: str | Path | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        local_files_only: bool | None = None,
        cache_dir: str | Path | None = None,
        allow_pickle: bool = False,
        optimize: str | Optimizations | Recipe = "default",
        max_batch: int | None = None,
        max_wait_ms: float = 0.0,
    ) -> FewStepGenerator:
        """Load the preset's weights (cache first: no network call when cached) onto `device`; weights that
        cannot fit its free memory are refused before any is read, naming the fixes.

        `source`: a diffusers folder, a single file or another hub repo of the family; `checkpoint`: a UNet/LoRA file
        instead of the preset's; `allow_pickle`: also read `.bin`/`.pt`/`.ckpt` pickles. `optimize`: "none"
        (diffusers' image bit for bit), "default" (within a tested tolerance), "max" or an `Optimizations`. `dtype`
        None: what `optimize` computes in. `max_batch`/`max_wait_ms`: how concurrent calls coalesce (None: by device).
        """
        spec = preset_table.get(preset)
        target = resolve_device(device)
        recipe = decide_recipe(optimize, target, family=family(spec.family))
        pipe, weights = loading.load(
            spec,
            recipe,
            device=target,
            dtype=dtype,
            source=source,
            checkpoint=checkpoint,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
            allow_pickle=allow_pickle,
        )
        return cls._built(spec, pipe, recipe, weights, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @classmethod
    def from_pipeline(
        cls,
        preset: str | Preset,
        pipe: Any,
        *,
        checkpoint: str | Path | None = None,
        allow_pickle: bool = False,
        optimize: str | Optimizations | Recipe = "none",
        max_batch: int | None = None,
        max_wait_ms: float = 0.0,
        cache_key: str | None = None,
    ) -> FewStepGenerator:
        """Wrap a diffusers pipeline you already loaded: fastdiff runs its own pipeline over `pipe`'s modules with
        the preset's scheduler (`pipe` keeps its own; a `checkpoint` goes into the shared UNet). `cache_key`: a
        name no other weights share (repo id and revision), naming the OpenVINO engine's disk cache instead of a
        hash of the weights. Other arguments: as in `from_preset`.
        """
        spec = preset_table.get(preset)
        recipe = decide_recipe(optimize, torch.device(pipe._execution_device), family=family(spec.family))
        own, weights = loading.adopt(
            spec, pipe, recipe, checkpoint=checkpoint, allow_pickle=allow_pickle, cache_key=cache_key
        )
        return cls._built(spec, own, recipe, weights, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @classmethod
    def _built(
        cls,
        spec: Preset,
        pipe: Any,
        recipe: Recipe,
        weights: WeightsIdentity,
        *,
        max_batch: int | None,
        max_wait_ms: float,
    ) -> FewStepGenerator:
        """This generator over `pipe`, or fastdiff.serving's `CoalescingGenerator` where concurrent calls are batched
        (`max_batch` > 1; None: by device, CUDA only)."""
        from .serving.coalesced import CoalescingGenerator, batching

        device = torch.device(pipe._execution_device)
        batch, wait = batching(device, max_batch=max_batch, max_wait_ms=max_wait_ms)
        if batch == 1 and not issubclass(cls, CoalescingGenerator):
            return cls(spec, pipe, optimizations=recipe, weights=weights)
        return CoalescingGenerator(spec, pipe, optimizations=recipe, weights=weights, max_batch=batch, max_wait_ms=wait)

    def __call__(
        self,
        prompt: str | list[str],
        *,
        steps: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images: int = 1,
        image: InputImage | None = None,
        strength: float | None = None,
        callback_on_step_end: Callable[..., dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        coalesce: bool = True,
        **diffusers_arguments: Any,
    ) -> GenerationResult:
        """Generate `num_images` images per prompt; image *k* of the call is the image of `seed + k` alone. None
        means the preset's value.

        As in diffusers: `prompt` may be a list (one `negative_prompt` for all, or a list as long); `image`
        (img2img) is a PIL image or a float array in [0, 1] (HWC numpy, CHW tensor) used at its own size;
        `generator` (one, or one per image) draws the noise instead of `seed`; `callback_on_step_end` runs after
        every step (`pipe._interrupt = True` stops the call); `num_inference_steps`/`num_images_per_prompt` are
        `steps`/`num_images`; other diffusers arguments are refused with fastdiff's way. Safe from many threads:
        compatible concurrent calls may share one pipeline call (`max_batch` > 1), except one with a generator, a
        callback or `coalesce=False`.
        """
        own: dict[str, Any] = {"prompt": prompt, "steps": steps, "seed": seed, "generator": generator}
        own |= {"guidance_scale": guidance_scale, "negative_prompt": negative_prompt, "height": height, "width": width}
        own |= {"num_images": num_images, "image": image, "strength": strength, "coalesce": coalesce}
        own |= {"callback_on_step_end": callback_on_step_end}
        own |= {"callback_on_step_end_tensor_inputs": callback_on_step_end_tensor_inputs}
        kwargs = translated(own, diffusers_arguments)
        # Without an img2img twin the image is refused by resolve_call.
        pipe = self.pipeline if kwargs["image"] is None or self._img2img is None else self._img2img
        requests = resolve_call(self._request, kwargs, device=self.device, tensor_inputs=pipe._callback_tensor_inputs)
        if self.recipe.compile and (shape := self._new_shape(requests)):
            height, width, unet_batch = shape
            warn(
                f"first call at {width}x{height}, UNet batch {unet_batch}: torch.compile compiles for this shape now "
                "(this call is slow). Call gen.warmup(height=..., width=..., batch=..., guidance_scale=..., "
                "img2img=...) at load time for every shape you serve.",
            )
        for r in requests:  # in the caller's thread, where the warning belongs
            self.embedding_cache.warn_if_unread(self.pipeline, r.prompt, r.negative_prompt, r.guidance)
        return joined(self._run(requests, coalesce=kwargs["coalesce"]))

    def _run(self, requests: Sequence[Request], *, coalesce: bool) -> list[GenerationResult]:
        """One call's requests in one pipeline call, once the lock is free (`coalesce`: see CoalescingGenerator)."""
        return self._generate(requests)

    def map(
        self,
        prompts: Iterable[str],
        *,
        seeds: Iterable[int] | None = None,
        batch_size: int | None = None,
        progress: bool = True,
        **call_kwargs: Any,
    ) -> Iterator[GenerationResult]:
        """One result per prompt, in order, `batch_size` prompts per pipeline call (default `max_batch`). Prompt *i*
        gets `seeds[i]`, else `seed + i` with `seed=`, else a random seed; `call_kwargs` are the same for all."""
        return map_prompts(
            self._request,
            self._generate,
            prompts,
            seeds=seeds,
            batch_size=batch_size or self.max_batch,
            call_kwargs=call_kwargs,
            desc=self.preset.name,
            progress=progress,
        )

    def _request(self, prompt: object, **given: Any) -> Request:
        return resolve_request(self.preset, **self._sides, prompt=prompt, **given)

    def _new_shape(self, requests: Sequence[Request]) -> tuple[int, int, int] | None:
        """Record the (height, width, UNet batch) of a pipeline call, which torch.compile specializes on; the shape
        the first time, else None."""
        width, height = batch_key(requests[0])[1]
        shape = height, width, sum(r.num_images for r in requests) * (2 if requests[0].guidance else 1)
        with self._shapes_lock:
            new = shape not in self._shapes
            self._shapes.add(shape)
        return shape if new else None

    @property
    def stats(self) -> BatchStats:
        """The coalescing's counters; a generator that does not coalesce has none, and says how to get them."""
        raise FastDiffError(
            "this generator does not coalesce calls (max_batch=1; by default only CUDA does): its calls take "
            "turns and are not counted; build it with max_batch=4 to batch them and count them"
        )

    @property
    def max_batch(self) -> int:
        """The most images one pipeline call makes when concurrent calls are coalesced (1: never)."""
        return 1

    def load_lora(
        self,
        lora: str | Path,
        *,
        weight_name: str | None = None,
        scale: float = 1.0,
        fuse: bool = True,
        local_files_only: bool | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        """Load a LoRA of the family's denoiser (the UNet; FLUX's transformer) from a `.safetensors` file, or a folder
        or hub repo id with `weight_name` (cache first), fused at `scale` as diffusers' `fuse_lora` does, or with
        `fuse=False` a peft adapter (`set_adapters`)."""
        path = lora_file(lora, weight_name, local_files_only=local_files_only, cache_dir=cache_dir)
        check_flag("fuse", fuse)
        with self._lock:
            apply_lora(self.pipeline, path, scale=scale, adapters=None if fuse else self._adapters)
            self._renew(f"lora={file_identity(path)} scale={scale!r} fuse={fuse}")

    def load_checkpoint(self, checkpoint: str | Path, *, allow_pickle: bool = False) -> None:
        """Load a full state dict of the family's denoiser (the UNet; FLUX's transformer) from `.safetensors`, or a
        pickle with `allow_pickle=True`, in place; a file that does not fit changes nothing."""
        check_flag("allow_pickle", allow_pickle)
        path = Path(checkpoint).expanduser()
        with self._lock:
            denoiser = family(self.preset.family).denoiser
            load_denoiser_checkpoint(self.pipeline, path, allow_pickle=allow_pickle, denoiser=denoiser)
            self._renew(f"checkpoint={file_identity(path)}")

    def weights_changed(self) -> None:
        """Say that `gen.pipeline`'s weights were changed directly, so that the caches derived from them (prompt
        embeddings, the engines' converted models) are renewed."""
        with self._lock:
            self._renew(None)

    def _renew(self, change: str | None) -> None:
        """A new weights identity after `change` (None: unknown); the caches of the old weights dropped (lock held)."""
        self.weights = self.weights.changed(change)
        self.embedding_cache.clear()
        for name, forward in openvino_forwards(self.pipeline).items():
            forward.weights_changed(self.weights.module_key(name))

    def encode(self, prompt: str, negative_prompt: str | None = None, *, guidance: bool = False) -> Embeddings:
        """Prompt embeddings for one image, from `embedding_cache` when this prompt was seen with these weights."""
        self.embedding_cache.warn_if_unread(self.pipeline, prompt, negative_prompt, guidance)
        with self._lock:
            return self.embedding_cache.encode(self.pipeline, prompt, negative_prompt, guidance)

    def _generate(self, requests: Sequence[Request]) -> list[GenerationResult]:
        """One pipeline call for compatible `requests` (equal `batch_key`); one result per request."""
        with self._lock:
            pipes = (self.pipeline, self._img2img)
            return generate_batch(
                self.preset, self.adapter, pipes, requests, cache=self.embedding_cache, device=self.device
            )

    @property
    def warmup_runs(self) -> int:
        """Calls at a new shape before the steady state: two with CUDA graphs (the second records the graph)."""
        return 2 if self.recipe.cuda_graphs else 1

    def warmup(
        self,
        *,
        height: int | None = None,
        width: int | None = None,
        batch: int = 1,
        guidance_scale: float | None = None,
        img2img: bool = False,
    ) -> float:
        """Generate at this shape now, so that compilation and CUDA-graph capture happen at load time; returns the
        seconds it took."""
        h, w = height or self.preset.height, width or self.preset.width
        image = Image.new("RGB", (w, h), (127, 127, 127)) if img2img else None
        shape = {"height": height, "width": width, "num_images": batch, "image": image}
        request = self._request("warm-up", seed=0, guidance_scale=guidance_scale, **shape)
        self._new_shape([request])  # no "first call at this shape" warning after the warm-up
        start = time.perf_counter()
        with expected_shapes():  # nor the OpenVINO engine's "new shape converts now" one
            for _ in range(self.warmup_runs):
                self._generate([request])
        seconds = time.perf_counter() - start
        log.info("%s: warm-up at %dx%d batch %d took %.2f s", self.preset.name, w, h, batch, seconds)
        return seconds

    def __repr__(self) -> str:
        return f"FewStepGenerator(preset={self.preset.name!r}, device={self.device}, dtype={self.dtype})"
