"""Where weights come from: preset + source + checkpoint → the optimized pipeline a generator runs.

Sources: the preset's hub repo, another hub repo, a local diffusers folder or a single file; on top, the preset's
UNet or LoRA checkpoint. Every hub read tries the cache first without a network call (`local_files_only=None`), so
a cached model loads offline exactly as online. The tiny autoencoders of optimize="max" load the same way.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from huggingface_hub import try_to_load_from_cache

from .checkpoints import apply_checkpoint, build_unet, checkpoint_path, load_unet_state_dict, pickle_refusal
from .devices import offloaded, resolve_dtype
from .errors import FastDiffError
from .families import family
from .hub import cache_first, fp16_variant
from .memory import available_memory, check_fits, pipeline_files, weights_bytes
from .optimize import apply_optimizations, own_copy
from .presets import Preset, is_shipped
from .recipe import Recipe
from .schedulers import build_scheduler
from .validation import check_flag
from .weights import WeightsIdentity, file_identity, source_identity

__all__ = ["adopt", "load", "load_tiny_vae"]

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _classify_source(source: str | Path) -> tuple[str, str]:
    """("hub", repo_id) | ("folder", path) | ("file", path) — or a FastDiffError naming what is accepted."""
    if not isinstance(source, (str, Path)):
        raise FastDiffError(f"source must be a path or hub repo id, not {type(source).__name__}")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise FastDiffError(f"{str(path)!r} is not a diffusers folder (no model_index.json); pass its root folder")
        return "folder", str(path)
    if path.is_file():
        if path.suffix not in (".safetensors", ".ckpt"):
            raise FastDiffError(f"{path.name}: a single-file checkpoint ends in .safetensors (or .ckpt)")
        return "file", str(path)
    if isinstance(source, str) and REPO_ID.match(source) and not source.startswith((".", "/", "~")):
        return "hub", source
    raise FastDiffError(f"source {str(source)!r} does not exist; pass a diffusers folder, a .safetensors file or None")


def load(
    preset: Preset,
    recipe: Recipe,
    *,
    device: torch.device,
    dtype: str | torch.dtype | None,
    source: str | Path | None,
    checkpoint: str | Path | None,
    local_files_only: bool | None,
    cache_dir: str | Path | None,
    allow_pickle: bool,
) -> tuple[Any, WeightsIdentity]:
    """`from_preset`'s pipeline and its weights' identity: weights from `source`, the preset's (or the given)
    checkpoint applied, the preset's scheduler recipe, moved to `device` and optimized by `recipe`. Everything is
    checked before anything large is read. Without a `dtype`, the weights load in the precision `recipe` computes
    in (no cast, no second copy)."""
    check_flag("local_files_only", local_files_only, optional=True)
    check_flag("allow_pickle", allow_pickle)
    spec, asked = family(preset.family), dtype
    dtype = recipe.dtype if dtype is None and recipe.dtype is not None else resolve_dtype(dtype, device)
    if asked is None and recipe.dtype is None and dtype in spec.refused_dtypes:
        dtype = torch.bfloat16  # the device's default (float16) breaks this family: load in its card's dtype
    spec.check_dtype(dtype)
    spec.check_dtype(recipe.dtype)
    kind, location = ("hub", preset.repo_id) if source is None else _classify_source(source)
    hub: dict[str, Any] = {"local_files_only": local_files_only, "cache_dir": cache_dir, "dtype": dtype}
    ckpt = checkpoint_path(preset, checkpoint, allow_pickle=allow_pickle, **hub)
    unet = ckpt if preset.checkpoint is not None and preset.checkpoint.kind == "unet" else None
    _check_fits(preset, kind, location, unet, device=device, dtype=dtype, cache_dir=cache_dir)
    components: dict[str, Any] = {}
    if unet is not None:
        # A full UNet checkpoint replaces the repo's UNet: build it from the config alone (no second UNet read).
        state = load_unet_state_dict(unet, allow_pickle=allow_pickle)
        config_repo = preset.repo_id if kind == "file" else location
        read_config = partial(UNet2DConditionModel.load_config, config_repo, subfolder="unet", cache_dir=cache_dir)
        local = Path(config_repo).is_dir()
        config = read_config(local_files_only=True) if local else cache_first(read_config, preset, **hub)
        components["unet"] = build_unet(config, state, name=unet.name, dtype=dtype)
    pipe = _load_pipeline(preset, kind, location, allow_pickle=allow_pickle, components=components, **hub)
    if ckpt is not None and unet is None:
        apply_checkpoint(pipe, preset, ckpt, allow_pickle=allow_pickle)
    pipe.scheduler = build_scheduler(preset.scheduler, pipe.scheduler)
    if kind == "file":
        origin: str | None = f"{file_identity(location)} config={preset.repo_id}"
    else:
        origin = source_identity(location, cache_dir)
    applied = () if ckpt is None else (f"checkpoint={file_identity(ckpt)}",)
    provenance = None if origin is None else (f"preset={preset.name}", f"dtype={dtype}", origin, *applied)
    return _optimized(pipe.to(device), preset, recipe, provenance, **hub)


def _check_fits(
    preset: Preset,
    kind: str,
    location: str,
    unet: Path | None,
    *,
    device: torch.device,
    dtype: torch.dtype,
    cache_dir: str | Path | None,
) -> None:
    """Refuse, before any weights are read, a pipeline whose weights cannot fit `device` (memory.py), `unet` a full
    UNet checkpoint that replaces the pipeline's; a pipeline not on disk yet (to be downloaded) is not estimated."""
    if kind == "file":
        files = [Path(location)]
    else:
        index = Path(location, "model_index.json")
        if not index.is_file():
            cached = try_to_load_from_cache(location, "model_index.json", cache_dir=cache_dir)
            if not isinstance(cached, str):
                return  # not downloaded yet: nothing on disk to estimate from
            index = Path(cached)
        skip = ("unet",) if unet is not None else ()
        files = pipeline_files(index.parent, variant=fp16_variant(preset, dtype, str(index.parent)), skip=skip)
    files += [unet] if unet is not None else []
    needed = weights_bytes([f for f in files if f.suffix == ".safetensors"], dtype=dtype)
    available, refused = available_memory(device), family(preset.family).refused_dtypes
    error = check_fits(
        what=preset.name, needed=needed, available=available, device=device, dtype=dtype, refused=refused
    )
    if error is not None:
        raise error


def adopt(
    preset: Preset,
    pipe: Any,
    recipe: Recipe,
    *,
    checkpoint: str | Path | None,
    allow_pickle: bool,
    cache_key: str | None,
) -> tuple[Any, WeightsIdentity]:
    """`from_pipeline`'s pipeline: a new one over `pipe`'s modules with the preset's scheduler (`pipe` keeps its
    own), the checkpoint applied into the shared UNet when given, optimized by `recipe` on fastdiff's own copies of
    the modules; its weights are named by `cache_key`, else hashed by the engine that needs a name."""
    check_flag("allow_pickle", allow_pickle)
    if offloaded(pipe) and recipe.changes_modules:
        raise FastDiffError("a pipeline with CPU offload hooks takes optimize='none' (its modules move per call)")
    if cache_key is not None and not isinstance(cache_key, str):
        raise FastDiffError(f"cache_key must be a str naming the pipeline's weights, not {type(cache_key).__name__}")
    kind = family(preset.family)
    if not isinstance(pipe, kind.pipelines):  # not ControlNet, inpaint…
        raise FastDiffError(
            f"{preset.name} needs a {kind.pipeline.__name__} (or its img2img twin), got {type(pipe).__name__}; "
            "pick a preset of its family, or build that pipeline from the same modules"
        )
    dtype = recipe.dtype or getattr(pipe, kind.denoiser).dtype
    kind.check_dtype(dtype)
    own = kind.over(pipe)
    own.scheduler = build_scheduler(preset.scheduler, type(pipe.scheduler).from_config(pipe.scheduler.config))
    if checkpoint is not None:
        path = checkpoint_path(preset, checkpoint, local_files_only=True, cache_dir=None, dtype=dtype)
        assert path is not None  # a given checkpoint always resolves
        apply_checkpoint(own, preset, path, allow_pickle=allow_pickle)
    provenance = None if cache_key is None else (f"cache_key={cache_key}",)
    return _optimized(own, preset, recipe, provenance, dtype=dtype)


def _optimized(
    pipe: Any, preset: Preset, recipe: Recipe, provenance: tuple[str, ...] | None, **hub: Any
) -> tuple[Any, WeightsIdentity]:
    """`pipe` optimized by `recipe` (with its tiny autoencoder, read with `hub`'s arguments), and the identity of the
    weights it then runs: `provenance` and the tiny autoencoder's origin, each named for the engines' disk cache."""
    tiny = None if recipe.tiny_vae is None else load_tiny_vae(recipe.tiny_vae, preset, **hub)
    if tiny is not None:
        location = _tiny_vae_location(recipe.tiny_vae, preset)
        origin = None if location is None else source_identity(location, hub.get("cache_dir"))
        provenance = None if provenance is None or origin is None else (*provenance, f"vae={origin}")
    weights = WeightsIdentity(provenance)
    components = ("unet", "text_encoder", "text_encoder_2", "vae")
    keys = {name: weights.module_key(name) for name in components if getattr(pipe, name, None) is not None}
    return apply_optimizations(pipe, recipe, tiny_vae=tiny, weights_keys=keys), weights


def _load_pipeline(
    preset: Preset,
    kind: str,
    location: str,
    *,
    dtype: torch.dtype,
    local_files_only: bool | None,
    cache_dir: str | Path | None,
    allow_pickle: bool,
    components: dict[str, Any],
) -> Any:
    """The diffusers pipeline of `preset` on the CPU, with `components` replaced."""
    pipeline_class: Any = family(preset.family).pipeline  # the family's own class, as its model card loads it
    if kind == "file" and location.endswith(".ckpt") and not allow_pickle:
        raise pickle_refusal(Path(location))
    variant = fp16_variant(preset, dtype, location if kind == "folder" else "")

    def fetch(*, local_files_only: bool) -> Any:
        options = {"dtype": dtype, "local_files_only": local_files_only, "cache_dir": cache_dir, **components}
        if kind == "file":
            # config= takes the architecture and the scheduler from the preset's repo, never guessed from keys:
            # a Turbo single file loaded with SDXL base's leading Euler gives noise (diffusers #6112).
            return pipeline_class.from_single_file(location, config=preset.repo_id, **options)
        try:
            return pipeline_class.from_pretrained(location, variant=variant, **options)
        except ValueError as err:
            if variant is None or "variant" not in str(err):
                raise
            raise FastDiffError(
                f"{location} has no {variant} files for dtype float16; load its full-precision files as float16 with "
                f"preset=fastdiff.presets.replace(preset, variant=None), or pass dtype='float32'"
            ) from None

    if kind == "folder":
        return fetch(local_files_only=True)
    return cache_first(fetch, preset, local_files_only, cache_dir, dtype)


def load_tiny_vae(
    spec: Any,
    preset: Preset,
    *,
    dtype: torch.dtype,
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
) -> Any:
    """The tiny autoencoder of `Optimizations.tiny_vae` on the CPU: "auto" (the family's TAESD; None for the
    shipped models and a family without one), a hub id or a folder (cache first, like every weight), or a given
    `AutoencoderTiny` (copied: the caller's is never changed)."""
    from diffusers import AutoencoderTiny

    if isinstance(spec, AutoencoderTiny):
        given: Any = spec
        return own_copy(given)
    if spec == "auto" and (is_shipped(preset) or family(preset.family).tiny_vae_repo is None):
        return None  # its own VAE is already tiny (TAESD was trained for another latent space), or no TAESD fits
    location = _tiny_vae_location(spec, preset)
    if location is None:
        raise FastDiffError(f"tiny_vae must be 'auto', a hub id, a folder or an AutoencoderTiny, not {spec!r}")
    tiny: Any = AutoencoderTiny
    fetch = partial(tiny.from_pretrained, str(location), dtype=dtype, cache_dir=cache_dir)
    if Path(location).is_dir():
        return fetch(local_files_only=True)
    return cache_first(fetch, preset, local_files_only, cache_dir, dtype, what=f"tiny VAE {location}")


def _tiny_vae_location(spec: Any, preset: Preset) -> str | Path | None:
    """Where `Optimizations.tiny_vae` reads from: "auto" is the family's TAESD; None for a given `AutoencoderTiny`."""
    location = family(preset.family).tiny_vae_repo if spec == "auto" else spec
    return location if isinstance(location, (str, Path)) else None
