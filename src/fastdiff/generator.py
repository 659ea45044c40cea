"""`FewStepGenerator`: a preset composed with a diffusers pipeline and the adapter of its family.

One request flows one way: validate against the preset (`validation`, `conventions`) → encode (cached, `embeddings`)
→ noise (seeded, one CPU generator per image) → denoise (the pipeline's own loop with the preset's scheduler recipe)
→ decode (`denoising`) → `GenerationResult` (`result`). Building one reads the same way: load (`loading.load`) →
optimize (`apply_optimizations`) → wrap. What runs around it (coalescing concurrent calls, `map`, the live
session, bulk runs) is `fastdiff.serving`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image
from PIL import Image

from . import presets as preset_table
from .adapters import Embeddings
from .checkpoints import apply_lora, load_unet_state_dict, lora_file, validate_unet_state_dict
from .conventions import InputImage, pass_through, prompt_pairs, translated
from .denoising import generate_batch
from .devices import make_clock, offloaded, resolve_device, resolve_dtype
from .embeddings import EmbeddingCache, PromptEncoder
from .errors import FastDiffError
from .families import family
from .loading import adopt, load, load_tiny_vae, tiny_vae_identity
from .openvino_engine import expected_shapes, openvino_forwards
from .optimize import apply_optimizations
from .presets import Preset
from .recipe import Optimizations, Recipe, decide_recipe
from .result import GenerationResult, joined
from .serving.coalescing import BatchStats, coalescer_for
from .serving.mapping import map_prompts
from .shapes import CompiledShapes
from .validation import Request, call_images, check_flag, numbered, resized_input, resolve_request
from .weights import WeightsIdentity, file_identity

__all__ = ["FewStepGenerator"]

log = logging.getLogger(__name__)


class FewStepGenerator:
    """Run a few-step model exactly as its model card does, with checked inputs and per-stage timings.

    Build one with `from_preset` (loads weights) or `from_pipeline` (wraps a pipeline you already have), then
    call it: `gen("a cat", steps=1, seed=0).images[0]`. `optimizations` is what was asked (a level's
    `Optimizations`), `recipe` what it decided for the device and applied (`Recipe`: engine, dtypes, compile...).
    Change weights after load through the generator (`load_lora`, `load_checkpoint`) or, after
    writing `gen.pipeline`'s weights yourself, call `weights_changed()`: `weights` tells every cache which
    weights it derived from.
    """

    def __init__(
        self,
        preset: Preset,
        pipe: Any,
        *,
        optimizations: Optimizations | Recipe | None = None,
        max_batch: int | None = None,
        max_wait_ms: float = 0.0,
        weights: WeightsIdentity | None = None,
    ) -> None:
        self.preset = preset
        self.pipeline = pipe
        kind = family(preset.family)
        self.recipe = decide_recipe(optimizations or "none", self.device, family=kind)  # a Recipe is kept as decided
        self.optimizations = self.recipe.optimizations
        self.adapter = kind.adapter
        self.weights = weights or WeightsIdentity(None)
        self._adapters: dict[str, float] = {}  # unfused LoRAs of `load_lora(fuse=False)` and their scales
        self.embedding_cache = EmbeddingCache(self.recipe.embedding_cache_size)
        self._shapes = CompiledShapes(enabled=self.recipe.compile)
        self._img2img = AutoPipelineForImage2Image.from_pipe(pipe)
        self._clock = make_clock(self.device)
        self._lock = threading.RLock()  # one pipeline call at a time: diffusers pipelines keep per-call state
        length, check = preset.max_sequence_length, kind.warn_if_truncated
        self._encoder = PromptEncoder(
            pipe, self.adapter, self.embedding_cache, max_sequence_length=length, check_prompt=check
        )
        # fastdiff.serving's queue that batches concurrent calls, where that pays (CUDA); None: they take turns
        self.coalescing = coalescer_for(
            self._generate, device=self.device, max_batch=max_batch, max_wait_ms=max_wait_ms
        )
        for p in (pipe, self._img2img):
            p.set_progress_bar_config(disable=True)

    @property
    def device(self) -> torch.device:
        """The device the pipeline computes on (with `enable_model_cpu_offload`, the accelerator, not the CPU)."""
        return torch.device(self.pipeline._execution_device)

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
        """Load the preset's weights (cache first, no network call when cached) and move them to `device`.

        `source`: None for the preset's hub repo, a local diffusers folder, a single-file checkpoint or another
        hub repo id of the same family. `checkpoint`: None for the preset's UNet/LoRA file from the hub, or a
        local file. `allow_pickle` opts in to pickle files (`.bin`, `.pt`, `.ckpt`; DMD2's UNets), which
        `torch.load` unpickles. `optimize`: "none" (bit-parity with diffusers), "default" (speedups within a
        tested tolerance of "none"), "max" (also the tiny autoencoder), or an `Optimizations`, decided once for
        `device` (`gen.recipe`). `dtype` is the dtype the weights load in (None: the one `optimize`'s precision
        casts the torch engine's modules to, else float16 on accelerators and float32 on the CPU);
        `Optimizations.precision` is what the optimized modules then compute in, so `dtype="float32"` with
        `precision="fp16"` loads fp32 weights and computes in fp16 copies of them. `max_batch`: the most images
        one pipeline call makes when concurrent calls are coalesced (None: by device; 1: never coalesce);
        `max_wait_ms`: how long a batch may wait to fill (0: never wait).
        """
        spec = preset_table.get(preset)
        target = resolve_device(device)
        recipe = decide_recipe(optimize, target, family=family(spec.family))
        # loaded in the precision it will compute in, where no dtype is asked: no cast, no second copy
        torch_dtype = recipe.dtype if dtype is None and recipe.dtype is not None else resolve_dtype(dtype, target)
        check_flag("local_files_only", local_files_only, optional=True)
        check_flag("allow_pickle", allow_pickle)
        hub: dict[str, Any] = {"local_files_only": local_files_only, "cache_dir": cache_dir, "dtype": torch_dtype}
        pipe, provenance = load(spec, source=source, checkpoint=checkpoint, allow_pickle=allow_pickle, **hub)
        tiny = None
        if recipe.tiny_vae is not None:
            tiny = load_tiny_vae(recipe.tiny_vae, spec, **hub)
            tiny_origin = tiny_vae_identity(recipe.tiny_vae, spec, cache_dir=cache_dir)
            provenance = None if provenance is None or tiny_origin is None else (*provenance, f"vae={tiny_origin}")
        weights = WeightsIdentity(provenance)
        keys = _weights_keys(pipe, weights)
        pipe = apply_optimizations(pipe.to(target), recipe, tiny_vae=tiny, weights_keys=keys)
        return cls(spec, pipe, optimizations=recipe, max_batch=max_batch, max_wait_ms=max_wait_ms, weights=weights)

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
        """Wrap a diffusers pipeline you already loaded (device and dtype stay as they are).

        The generator gets its own pipeline object sharing `pipe`'s modules, with the preset's scheduler, so
        `pipe` keeps its scheduler and stays usable. A `checkpoint` file is loaded into the shared UNet.
        `optimize` defaults to "none" here; other levels apply the recipe `from_preset` applies on the pipeline's
        device (a `Recipe` is applied as decided, for whichever device), to fastdiff's own copies of the modules,
        which share the weight tensors with `pipe` (no second copy of the weights) and leave `pipe` as it was. A
        compiled pipeline (a generator's `.pipeline` on CUDA) is accepted: its modules are used uncompiled and
        compiled once more only if the recipe says so.
        `max_batch`, `max_wait_ms`: as in `from_preset`. `cache_key`: a name of `pipe`'s weights that no other
        weights share (e.g. the repo id and revision they came from), under which the OpenVINO engine keeps its
        converted models on disk; without it they are named by a hash of the weights, computed once per module.
        """
        spec = preset_table.get(preset)
        check_flag("allow_pickle", allow_pickle)
        kind = family(spec.family)
        recipe = decide_recipe(optimize, torch.device(pipe._execution_device), family=kind)
        if offloaded(pipe) and recipe.changes_modules:
            raise FastDiffError("a pipeline with CPU offload hooks takes optimize='none' (its modules move per call)")
        own = adopt(spec, pipe, checkpoint=checkpoint, allow_pickle=allow_pickle)
        tiny = None
        if recipe.tiny_vae is not None:
            tiny = load_tiny_vae(recipe.tiny_vae, spec, dtype=recipe.dtype or getattr(own, kind.denoiser).dtype)
        if cache_key is not None and not isinstance(cache_key, str):
            raise FastDiffError(
                f"cache_key must be a str naming the pipeline's weights, not {type(cache_key).__name__}"
            )
        given = None if cache_key is None or recipe.tiny_vae is not None else (f"cache_key={cache_key}",)
        weights = WeightsIdentity(given)
        own = apply_optimizations(own, recipe, tiny_vae=tiny, weights_keys=_weights_keys(own, weights))
        return cls(spec, own, optimizations=recipe, max_batch=max_batch, max_wait_ms=max_wait_ms, weights=weights)

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
        """Generate `num_images` images; image *i* is the image of `seed + i` alone. None means the preset's value.

        `prompt` may be a list, as in diffusers: the images come in prompt order, each prompt's `num_images` in
        turn, and image *k* of the call is still the image of `seed + k` alone; `negative_prompt` is then one str for
        all or a list as long. `image` (img2img) is a PIL image, or as in diffusers a float numpy array (HWC) or
        tensor (CHW) in [0, 1], used at its own size. diffusers' names work: `num_inference_steps` is `steps`,
        `num_images_per_prompt` is `num_images`; the rest of diffusers' arguments are refused with fastdiff's way.

        `generator` (instead of `seed`) draws the noise as diffusers' pipeline does with the same generator: a
        list gives image *k* the *k*-th generator, so `torch.Generator("cpu").manual_seed(7)` alone is `seed=7`; a
        single generator serves every image in turn, as in diffusers (for several images that is not `seed + i`).
        It advances, as in diffusers. `callback_on_step_end(pipe, step, timestep, callback_kwargs) -> dict` runs
        at the end of every step with the tensors named in `callback_on_step_end_tensor_inputs`, as in diffusers;
        `pipe._interrupt = True` there stops the call (the images are decoded from where it stopped).

        Safe to call from many threads: one pipeline call at a time. Where calls coalesce (`max_batch` > 1, by
        default on CUDA) those that arrive while the model is busy are batched with compatible ones (same steps,
        size, guidance, img2img strength) into one pipeline call, and each gets the images it would get alone. A
        call with a generator or a callback runs alone (its noise and its stop are its own), as does one with
        `coalesce=False`.
        """
        own: dict[str, Any] = {"steps": steps, "seed": seed, "generator": generator}
        own |= {"guidance_scale": guidance_scale, "negative_prompt": negative_prompt, "height": height, "width": width}
        own |= {"num_images": num_images, "image": image, "strength": strength, "coalesce": coalesce}
        own |= {"callback_on_step_end": callback_on_step_end}
        own |= {"callback_on_step_end_tensor_inputs": callback_on_step_end_tensor_inputs}
        kwargs = translated(own, diffusers_arguments, accepted=list(own))
        shared = {k: kwargs[k] for k in ("steps", "guidance_scale", "height", "width", "num_images", "image")}
        requests = []
        for text, negative in prompt_pairs(prompt, kwargs["negative_prompt"]):
            # seed 0 until every prompt is checked: the call's seed (or its generators) numbers all its images
            requests.append(
                self._request(text, negative_prompt=negative, seed=0, strength=kwargs["strength"], **shared)
            )
        total = call_images(requests)
        pipe = self.pipeline if requests[0].image is None else self._img2img
        passed = pass_through(kwargs, images=total, device=self.device, tensor_inputs=pipe._callback_tensor_inputs)
        requests = numbered(requests, seed=kwargs["seed"], passed=passed)
        self._shapes.warn_if_new(replace(requests[0], num_images=total))
        for r in requests:  # in this thread
            self._encoder.warn_if_truncated(r.prompt, r.negative_prompt, r.guidance)
        if self.coalescing is None:
            return joined(self._generate(requests))
        return joined(self.coalescing.submit_call(requests, solo=passed is not None or not kwargs["coalesce"]))

    def map(
        self,
        prompts: Iterable[str],
        *,
        seeds: Iterable[int] | None = None,
        batch_size: int | None = None,
        progress: bool = True,
        **call_kwargs: Any,
    ) -> Iterator[GenerationResult]:
        """One result per prompt, in order, `batch_size` prompts per pipeline call (default `max_batch`), with a tqdm
        bar (`fastdiff.serving.mapping`). Prompt *i* gets `seeds[i]`, else `seed + i` when `seed=` is among
        `call_kwargs` (the arguments of a call, the same for every prompt), else a random seed; its images equal
        those of that call alone. Other threads' calls interleave between batches."""
        size, desc = batch_size or self.max_batch, self.preset.name
        return map_prompts(
            self._request,
            self._generate,
            prompts,
            seeds=seeds,
            batch_size=size,
            call_kwargs=call_kwargs,
            desc=desc,
            progress=progress,
        )

    def _request(self, prompt: object, **given: Any) -> Request:
        """A call's arguments checked against the preset, with every default filled in."""
        kwargs = {"steps": None, "negative_prompt": None, "strength": None, **given}
        request = resolve_request(
            self.preset,
            vae_scale_factor=self.pipeline.image_processor.config.vae_scale_factor,  # FLUX: VAE 8 × patch 2
            default_strength=family(self.preset.family).default_strength,
            prompt=prompt,
            **kwargs,
        )
        if request.image is not None and (kwargs["height"] is not None or kwargs["width"] is not None):
            request = resized_input(request)
        return request

    @property
    def stats(self) -> BatchStats:
        """The coalescing's counters: calls, pipeline batches, mean images per batch, and queue wait p50/p95 (seconds)
        so far; a `FastDiffError` where calls are not coalesced (`coalescing` is None)."""
        if self.coalescing is None:
            raise FastDiffError(
                "this generator does not coalesce calls (max_batch=1; by default only CUDA does): its calls take "
                "turns and are not counted; build it with max_batch=4 to batch them and count them"
            )
        return self.coalescing.stats()

    @property
    def max_batch(self) -> int:
        """The most images one pipeline call makes when concurrent calls are coalesced (1: never)."""
        return 1 if self.coalescing is None else self.coalescing.max_batch

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
        """Load a LoRA into the weights (a `.safetensors` file, a folder with `weight_name`, or a hub repo id with
        `weight_name`, cache first), at `scale`, as diffusers' `load_lora_weights` + `fuse_lora(lora_scale=scale)`
        + `unload_lora_weights()` do: the image is diffusers' own for those calls, on every engine and level, and
        each call costs no more than before. `fuse=False` keeps it as a peft adapter at `scale`
        (`set_adapters`), as diffusers does without fusing. Every cache derived from the weights is renewed."""
        path = lora_file(lora, weight_name, local_files_only=local_files_only, cache_dir=cache_dir)
        check_flag("fuse", fuse)
        with self._lock:
            if fuse:
                apply_lora(self.pipeline, path, scale=scale)
            else:
                name = f"lora{self.weights.version + 1}"
                self.pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
                self._adapters[name] = scale
                self.pipeline.set_adapters(list(self._adapters), adapter_weights=list(self._adapters.values()))
            self._renew(f"lora={file_identity(path)} scale={scale!r} fuse={fuse}")

    def load_checkpoint(self, checkpoint: str | Path, *, allow_pickle: bool = False) -> None:
        """Load a full UNet state dict (a local `.safetensors` file, or a pickle with `allow_pickle=True`) into the
        UNet in place, checked first (a file that does not fit leaves the weights as they were); every cache
        derived from the weights is renewed."""
        check_flag("allow_pickle", allow_pickle)
        path = Path(checkpoint).expanduser()
        state = load_unet_state_dict(path, allow_pickle=allow_pickle)
        unet = getattr(self.pipeline.unet, "_orig_mod", self.pipeline.unet)
        validate_unet_state_dict(state, unet, name=path.name)
        with self._lock:
            unet.load_state_dict(state)
            self._renew(f"checkpoint={file_identity(path)}")

    def weights_changed(self) -> None:
        """Say that `gen.pipeline`'s weights were changed directly (a state dict loaded, a LoRA fused with
        diffusers' own calls, a tensor written): the next call encodes prompts and converts the engines' models
        from the new weights. Without this call the caches keep what they derived from the old weights."""
        with self._lock:
            self._renew(None)

    def _renew(self, change: str | None) -> None:
        """After a change to the weights (described, or None when unknown): a new identity, and every cache
        derived from the old weights dropped. Called with the lock held."""
        self.weights = self.weights.changed(change)
        self.embedding_cache.weights_changed(self.weights.version)
        for name, forward in openvino_forwards(self.pipeline).items():
            forward.weights_changed(self.weights.module_key(name))

    def encode(self, prompt: str, negative_prompt: str | None = None, *, guidance: bool = False) -> Embeddings:
        """Prompt embeddings for one image, from the LRU cache when this prompt was seen before with the same
        weights."""
        self._encoder.warn_if_truncated(prompt, negative_prompt, guidance)
        with self._lock:
            return self._encoder(prompt, negative_prompt, guidance)

    def _generate(self, requests: Sequence[Request]) -> list[GenerationResult]:
        """One pipeline call for compatible `requests` (equal `batch_key`); one result per request."""
        with self._lock:
            return generate_batch(
                self.preset,
                self.adapter,
                (self.pipeline, self._img2img),
                requests,
                embed=lambda r: self._encoder(r.prompt, r.negative_prompt, r.guidance),
                clock=self._clock,
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
        """Generate at this shape now, so that compilation (and CUDA-graph capture) happens now, not on a user's
        first call; returns the seconds it took (also logged). `guidance_scale` > 1 warms the CFG shape (the UNet
        batch doubles), `img2img` the image-to-image path. Later calls at this shape do not recompile."""
        h, w = height or self.preset.height, width or self.preset.width
        image = Image.new("RGB", (w, h), (127, 127, 127)) if img2img else None
        shape = {"height": height, "width": width, "num_images": batch, "image": image}
        request = self._request("warm-up", seed=0, guidance_scale=guidance_scale, **shape)
        self._shapes.mark(request)  # no "first call at this shape" warning for the warm-up itself
        start = time.perf_counter()
        with expected_shapes():  # nor the OpenVINO engine's "new shape converts now" one
            for _ in range(self.warmup_runs):
                self._generate([request])
        seconds = time.perf_counter() - start
        log.info("%s: warm-up at %dx%d batch %d took %.2f s", self.preset.name, w, h, batch, seconds)
        return seconds

    def __repr__(self) -> str:
        return f"FewStepGenerator(preset={self.preset.name!r}, device={self.device}, dtype={self.dtype})"


def _weights_keys(pipe: Any, weights: WeightsIdentity) -> dict[str, str | None]:
    """Each component's weights named for the OpenVINO engine's disk cache."""
    names = ("unet", "text_encoder", "text_encoder_2", "vae")
    return {name: weights.module_key(name) for name in names if getattr(pipe, name, None) is not None}
