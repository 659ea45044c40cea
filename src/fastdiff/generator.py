"""`FewStepGenerator`: a preset composed with a diffusers pipeline and the adapter of its family.

One request flows one way: validate against the preset → encode (cached) → noise (seeded, one CPU generator per
image) → denoise (the pipeline's own loop with the preset's scheduler recipe) → decode → `GenerationResult`.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image
from PIL import Image

from . import presets as preset_table
from .adapters import Embeddings, adapter_for, default_strength
from .checkpoints import (
    apply_lora,
    build_unet,
    check_checkpoint_matches,
    load_unet_state_dict,
    validate_unet_state_dict,
)
from .devices import resolve_device, resolve_dtype, synchronizer
from .embeddings import EmbeddingCache
from .errors import FastDiffError, FastDiffWarning
from .loading import checkpoint_path, classify_source, load_pipeline, load_unet_config
from .optimize import Optimizations, apply_optimizations, compute_dtype, resolve_optimizations
from .presets import Preset
from .result import GenerationResult
from .schedulers import build_scheduler, img2img_schedule
from .validation import Request, check_flag, resized_input, resolve_request, warn_truncation

__all__ = ["FewStepGenerator"]

log = logging.getLogger(__name__)


class FewStepGenerator:
    """Run a few-step model exactly as its model card does, with checked inputs and per-stage timings.

    Build one with `from_preset` (loads weights) or `from_pipeline` (wraps a pipeline you already have), then
    call it: `gen("a cat", steps=1, seed=0).images[0]`.
    """

    def __init__(self, preset: Preset, pipe: Any, *, optimizations: Optimizations | None = None) -> None:
        self.preset = preset
        self.pipeline = pipe
        self.optimizations = (optimizations or Optimizations()).resolved(torch.device(pipe.device))
        self.adapter = adapter_for(preset.family)
        self.embedding_cache = EmbeddingCache(self.optimizations.embedding_cache_size)
        self._warm_shapes: set[tuple[int, int, int]] = set()
        self._img2img: Any = None
        self._clock = synchronizer(self.device)
        pipe.set_progress_bar_config(disable=True)

    @property
    def device(self) -> torch.device:
        """The device the pipeline runs on (fastdiff never moves it after loading)."""
        return torch.device(self.pipeline.device)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the UNet weights."""
        return self.pipeline.unet.dtype  # type: ignore[no-any-return]

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
        optimize: str | Optimizations = "default",
    ) -> FewStepGenerator:
        """Load the preset's weights (cache first, no network call when cached) and move them to `device`.

        `source`: None for the preset's hub repo, a local diffusers folder, a single-file checkpoint or another
        hub repo id of the same family. `checkpoint`: None for the preset's UNet/LoRA file from the hub, or a
        local file. `allow_pickle` opts in to pickle files (`.bin`, `.pt`, `.ckpt`; DMD2's UNets), which
        `torch.load` unpickles. `optimize`: "none" (bit-parity with diffusers), "default" (speedups within a
        tested tolerance of "none"), "max" (also the tiny autoencoder), or an `Optimizations`.
        """
        spec = preset_table.get(preset)
        target = resolve_device(device)
        opts = resolve_optimizations(optimize).resolved(target)
        torch_dtype = compute_dtype(opts, target, resolve_dtype(dtype, target), asked=dtype is not None)
        check_flag("local_files_only", local_files_only, optional=True)
        check_flag("allow_pickle", allow_pickle)
        source_kind, location = classify_source(source)  # refuse a bad source before reading anything
        ckpt = checkpoint_path(
            spec, checkpoint, local_files_only=local_files_only, cache_dir=cache_dir, allow_pickle=allow_pickle
        )
        if ckpt is not None and checkpoint is not None:
            check_checkpoint_matches(spec, ckpt)
        components: dict[str, Any] = {}
        if ckpt is not None and spec.checkpoint is not None and spec.checkpoint.kind == "unet":
            state = load_unet_state_dict(ckpt, allow_pickle=allow_pickle)
            config_source = location if source_kind in ("folder", "hub") and location else None
            config = load_unet_config(spec, config_source, local_files_only=local_files_only, cache_dir=cache_dir)
            components["unet"] = build_unet(config, state, name=ckpt.name, dtype=torch_dtype)
        pipe = load_pipeline(
            spec,
            source=source,
            dtype=torch_dtype,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
            allow_pickle=allow_pickle,
            components=components,
        )
        if ckpt is not None and spec.checkpoint is not None and spec.checkpoint.kind == "lora":
            apply_lora(pipe, ckpt)
        pipe.scheduler = build_scheduler(spec.scheduler, pipe.scheduler)
        pipe = apply_optimizations(pipe.to(target), opts, family=spec.family, dtype=torch_dtype, cache_dir=cache_dir)
        return cls(spec, pipe, optimizations=opts)

    @classmethod
    def from_pipeline(
        cls,
        preset: str | Preset,
        pipe: Any,
        *,
        checkpoint: str | Path | None = None,
        allow_pickle: bool = False,
        optimize: str | Optimizations = "none",
    ) -> FewStepGenerator:
        """Wrap a diffusers pipeline you already loaded (device and dtype stay as they are).

        The generator gets its own pipeline object sharing `pipe`'s modules, with the preset's scheduler, so
        `pipe` keeps its scheduler and stays usable. A `checkpoint` file is loaded into the shared UNet.
        `optimize` defaults to "none" here; other levels optimize fastdiff's own copies of the modules, which
        share the weight tensors with `pipe` (no second copy of the weights) and leave `pipe` as it was. The
        dtype stays `pipe`'s unless `Optimizations.compute_dtype` names one.
        """
        opts = resolve_optimizations(optimize)
        spec = preset_table.get(preset)
        check_flag("allow_pickle", allow_pickle)
        expected = "StableDiffusionXL" if spec.family == "sdxl" else "StableDiffusion"
        name = type(pipe).__name__
        if not name.startswith(expected) or (spec.family != "sdxl" and name.startswith("StableDiffusionXL")):
            raise FastDiffError(f"{spec.name} needs a {expected}Pipeline, got {name}; pick a preset of its family")
        own = AutoPipelineForText2Image.from_pipe(pipe)
        own.scheduler = build_scheduler(spec.scheduler, type(pipe.scheduler).from_config(pipe.scheduler.config))
        if checkpoint is not None:
            path = checkpoint_path(spec, checkpoint, local_files_only=True, cache_dir=None)
            assert path is not None and spec.checkpoint is not None  # a given checkpoint always resolves
            check_checkpoint_matches(spec, path)
            if spec.checkpoint.kind == "lora":
                apply_lora(own, path)
            else:
                state = load_unet_state_dict(path, allow_pickle=allow_pickle)
                validate_unet_state_dict(state, own.unet, name=path.name)
                own.unet.load_state_dict(state)
        opts = opts.resolved(torch.device(own.device))
        dtype = compute_dtype(opts, torch.device(own.device), own.unet.dtype, asked=True)
        own = apply_optimizations(own, opts, family=spec.family, dtype=dtype)
        return cls(spec, own, optimizations=opts)

    def __call__(
        self,
        prompt: str,
        *,
        steps: int | None = None,
        seed: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images: int = 1,
        image: Image.Image | None = None,
        strength: float | None = None,
    ) -> GenerationResult:
        """Generate `num_images` images; image *i* is the image of `seed + i` alone. None means the preset's value."""
        request = resolve_request(
            self.preset,
            vae_scale_factor=self.pipeline.vae_scale_factor,
            default_strength=default_strength(self.preset.family),
            prompt=prompt,
            steps=steps,
            seed=seed,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            height=height,
            width=width,
            num_images=num_images,
            image=image,
            strength=strength,
        )
        self._warn_new_shape(request)
        if request.image is not None and (height is not None or width is not None):
            request = resized_input(request)
        start = self._clock()
        embeds = self.encode(request.prompt, request.negative_prompt, guidance=request.guidance)
        encoded = self._clock()
        latents = self._denoise(request, embeds)
        denoised = self._clock()
        images = self.adapter.decode(self.pipeline, latents)
        done = self._clock()
        timings = {"encode": encoded - start, "denoise": denoised - encoded, "decode": done - denoised}
        timings["total"] = done - start
        return GenerationResult(
            images=images,
            seed=request.seed,
            steps=request.steps,
            preset=self.preset.name,
            guidance_scale=request.guidance_scale,
            height=images[0].height,
            width=images[0].width,
            timings=timings,
        )

    def encode(self, prompt: str, negative_prompt: str | None = None, *, guidance: bool = False) -> Embeddings:
        """Prompt embeddings for one image, from the LRU cache when this prompt was seen before."""

        def compute() -> Embeddings:
            warn_truncation(self.pipeline.tokenizer, prompt)  # on a cache miss only: no per-call tokenizing
            with torch.no_grad():
                return self.adapter.encode(self.pipeline, prompt, negative_prompt, guidance=guidance)

        return self.embedding_cache.get((prompt, negative_prompt if guidance else None, guidance), compute)

    def _denoise(self, request: Request, embeds: Embeddings) -> torch.Tensor:
        """Run the pipeline's own denoising loop on precomputed embeddings; returns latents (B, 4, H/8, W/8)."""
        seeds = range(request.seed, request.seed + request.num_images)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        kwargs: dict[str, Any] = {
            **embeds,
            "guidance_scale": request.guidance_scale,
            "num_images_per_prompt": request.num_images,
            "generator": generators[0] if len(generators) == 1 else generators,
            "output_type": "latent",
        }
        if self.preset.eta is not None:
            kwargs["eta"] = self.preset.eta
        timesteps = self.preset.timesteps
        if request.image is None:
            pipe, steps = self.pipeline, request.steps
            kwargs.update(height=request.height, width=request.width)
        else:
            assert request.strength is not None
            pipe = self._img2img_pipeline()
            steps, strength, timesteps = img2img_schedule(request.steps, request.strength, timesteps)
            kwargs.update(image=request.image, strength=strength)
        kwargs["num_inference_steps"] = steps
        if timesteps is not None:
            kwargs["timesteps"] = list(timesteps)
        with torch.no_grad():
            latents: torch.Tensor = pipe(**kwargs).images
        return latents

    def warmup(self, *, height: int | None = None, width: int | None = None, batch: int = 1) -> float:
        """Generate once at this shape so that compilation (and CUDA-graph capture) happens now, not on a user's
        first call; returns the seconds it took (also logged). Later calls at this shape do not recompile."""
        start = time.perf_counter()
        runs = 2 if self.optimizations.compile else 1  # reduce-overhead records its CUDA graph on the second run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FastDiffWarning)
            for _ in range(runs):
                result = self("warm-up", seed=0, height=height, width=width, num_images=batch)
        seconds = time.perf_counter() - start
        self._warm_shapes.add((result.height, result.width, batch))
        log.info(
            "%s: warm-up at %dx%d batch %d took %.2f s", self.preset.name, result.width, result.height, batch, seconds
        )
        return seconds

    def _warn_new_shape(self, request: Request) -> None:
        shape = (request.height, request.width, request.num_images)
        if self.optimizations.compile and request.image is None and shape not in self._warm_shapes:
            self._warm_shapes.add(shape)
            warnings.warn(
                f"first call at {request.width}x{request.height}, batch {request.num_images}: torch.compile compiles "
                "for this shape now (this call is slow). Call gen.warmup(height=..., width=..., batch=...) at load "
                "time for every shape you serve.",
                FastDiffWarning,
                stacklevel=3,
            )

    def _img2img_pipeline(self) -> Any:
        if self._img2img is None:
            self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipeline)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    def __repr__(self) -> str:
        return f"FewStepGenerator(preset={self.preset.name!r}, device={self.device}, dtype={self.dtype})"
