"""Where weights come from: the preset's hub repo (cache first), a local diffusers folder, or a single file.

With `local_files_only=None` (the default) every hub read first tries the cache without any network call, and
goes online only for what is missing, so a cached model loads offline exactly as it does online.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import AutoPipelineForText2Image, StableDiffusionPipeline, StableDiffusionXLPipeline
from huggingface_hub import constants, hf_hub_download, snapshot_download, try_to_load_from_cache

from .checkpoints import pickle_refusal
from .errors import FastDiffError
from .presets import Preset

__all__ = ["checkpoint_path", "classify_source", "download", "load_pipeline", "load_unet_config", "missing_files"]

T = TypeVar("T")
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
PIPELINE_CLASSES: dict[str, Any] = {
    "sd1": StableDiffusionPipeline,
    "sd2": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
}


def _offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def missing_files(preset: Preset, *, cache_dir: str | Path | None = None) -> list[str]:
    """The hub files of `preset` that are not in the cache ("repo" for a whole pipeline repo)."""
    missing = []
    if not isinstance(try_to_load_from_cache(preset.repo_id, "model_index.json", cache_dir=cache_dir), str):
        missing.append(f"{preset.repo_id} (pipeline)")
    ckpt = preset.checkpoint
    if ckpt and not isinstance(try_to_load_from_cache(ckpt.repo_id, ckpt.filename, cache_dir=cache_dir), str):
        missing.append(f"{ckpt.repo_id}/{ckpt.filename}")
    return missing


def _missing_error(preset: Preset, cache_dir: str | Path | None, err: Exception) -> FastDiffError:
    missing = missing_files(preset, cache_dir=cache_dir) or [str(err).splitlines()[0][:200]]
    where = "offline (HF_HUB_OFFLINE or local_files_only)" if _offline() else "could not be downloaded"
    return FastDiffError(
        f"{preset.name}: files not in the Hugging Face cache and {where}: {', '.join(missing)}. "
        f"Run `fastdiff download {preset.name}` on a machine with internet (same HF_HOME), "
        "or pass source= a local diffusers folder"
    )


def _quietly(fetch: Callable[[bool], T], local: bool) -> T:
    # diffusers still passes `local_dir_use_symlinks` to huggingface_hub, which warns on every load: noise the
    # user can do nothing about (diffusers #1057-style warning fatigue).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)
        return fetch(local)


def _cache_first(
    fetch: Callable[[bool], T], preset: Preset, local_files_only: bool | None, cache_dir: str | Path | None
) -> T:
    """Call `fetch(local_files_only)`: the cache first when None, the network only for what is missing."""
    if local_files_only is None:
        try:
            return _quietly(fetch, True)
        except OSError as err:  # LocalEntryNotFoundError and diffusers' "not cached" are OSErrors
            if _offline():
                raise _missing_error(preset, cache_dir, err) from None
    try:
        return _quietly(fetch, bool(local_files_only))
    except OSError as err:
        raise _missing_error(preset, cache_dir, err) from None


def checkpoint_path(
    preset: Preset,
    checkpoint: str | Path | None,
    *,
    local_files_only: bool | None,
    cache_dir: str | Path | None,
    allow_pickle: bool = True,
) -> Path | None:
    """The local path of the preset's checkpoint: the user's file, or the preset's hub file (cache first)."""
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, Path)):
            raise FastDiffError(f"checkpoint must be a path, not {type(checkpoint).__name__}")
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FastDiffError(f"checkpoint {str(checkpoint)!r} does not exist; pass the path of a weights file")
        return path
    ckpt = preset.checkpoint
    if ckpt is None:
        return None
    if ckpt.is_pickle and not allow_pickle:  # refuse before a multi-GB download, not after
        raise pickle_refusal(Path(ckpt.filename))

    def fetch(local: bool) -> Path:
        return Path(hf_hub_download(ckpt.repo_id, ckpt.filename, local_files_only=local, cache_dir=cache_dir))

    return _cache_first(fetch, preset, local_files_only, cache_dir)


def _variant(preset: Preset, dtype: torch.dtype, folder: str = "") -> str | None:
    """The preset's fp16 variant when loading float16 — unless a local folder ships no variant files."""
    if dtype != torch.float16 or preset.variant is None:
        return None
    if folder and not any(Path(folder).glob(f"*/*.{preset.variant}.safetensors")):
        return None
    return preset.variant


def load_unet_config(
    preset: Preset, source: str | Path | None, *, local_files_only: bool | None, cache_dir: str | Path | None
) -> dict[str, Any]:
    """The UNet config of the pipeline (to build an empty UNet that a full UNet checkpoint fills)."""
    from diffusers import UNet2DConditionModel

    location = str(source) if source is not None else preset.repo_id

    def fetch(local: bool) -> dict[str, Any]:
        config: dict[str, Any] = UNet2DConditionModel.load_config(
            location, subfolder="unet", local_files_only=local, cache_dir=cache_dir
        )
        return config

    if source is not None and Path(source).is_dir():
        return _quietly(fetch, True)
    return _cache_first(fetch, preset, local_files_only, cache_dir)


def classify_source(source: str | Path | None) -> tuple[str, str]:
    """("hub", repo_id) | ("folder", path) | ("file", path) — or a FastDiffError naming what is accepted."""
    if source is None:
        return "hub", ""
    if not isinstance(source, (str, Path)):
        raise FastDiffError(f"source must be a path or hub repo id, not {type(source).__name__}")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise FastDiffError(f"{str(path)!r} is not a diffusers folder (no model_index.json); pass its root folder")
        return "folder", str(path)
    if path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise FastDiffError(f"{path.name}: a single-file checkpoint ends in .safetensors (or .ckpt)")
        return "file", str(path)
    if isinstance(source, str) and REPO_ID.match(source) and not source.startswith((".", "/", "~")):
        return "hub", source
    raise FastDiffError(f"source {str(source)!r} does not exist; pass a diffusers folder, a .safetensors file or None")


def load_pipeline(
    preset: Preset,
    *,
    source: str | Path | None,
    dtype: torch.dtype,
    local_files_only: bool | None,
    cache_dir: str | Path | None,
    allow_pickle: bool,
    components: dict[str, Any],
) -> Any:
    """Load the diffusers pipeline of `preset` on the CPU (the caller moves it), with `components` replaced."""
    kind, location = classify_source(source)
    if kind == "file":
        if location.endswith(".ckpt") and not allow_pickle:
            raise FastDiffError(f"{Path(location).name} is a pickle checkpoint; pass allow_pickle=True to load it")
        single: Any = PIPELINE_CLASSES[preset.family]

        def fetch_single(local: bool) -> Any:
            # config= takes the architecture and the scheduler from the preset's repo, never guessed from keys:
            # a Turbo single file loaded with SDXL base's leading Euler gives noise (diffusers #6112).
            return single.from_single_file(
                location, config=preset.repo_id, dtype=dtype, local_files_only=local, cache_dir=cache_dir, **components
            )

        return _cache_first(fetch_single, preset, local_files_only, cache_dir)
    repo = location or preset.repo_id
    variant = _variant(preset, dtype, location if kind == "folder" else "")
    kwargs = {"dtype": dtype, "variant": variant, "cache_dir": cache_dir, **components}

    auto: Any = AutoPipelineForText2Image

    def fetch(local: bool) -> Any:
        return auto.from_pretrained(repo, local_files_only=local, **kwargs)

    if kind == "folder":
        return _quietly(fetch, True)
    return _cache_first(fetch, preset, local_files_only, cache_dir)


def download(
    preset: Preset,
    *,
    dtype: torch.dtype = torch.float16,
    cache_dir: str | Path | None = None,
    allow_pickle: bool = False,
) -> list[str]:
    """Fetch only the files `preset` needs into the hub cache (allow-patterns), returning local paths."""
    if preset.checkpoint and preset.checkpoint.is_pickle and not allow_pickle:
        raise pickle_refusal(Path(preset.checkpoint.filename))
    variant = _variant(preset, dtype)
    suffix = ".fp16.safetensors" if variant else ".safetensors"
    weights = [f"*/diffusion_pytorch_model{suffix}", f"*/model{suffix}"]
    patterns = [
        "model_index.json",
        "*/config.json",
        "*/preprocessor_config.json",
        "scheduler/*",
        "tokenizer*/*",
        *weights,
    ]
    ignore = ["unet/*.safetensors"] if preset.checkpoint and preset.checkpoint.kind == "unet" else []
    paths = [snapshot_download(preset.repo_id, allow_patterns=patterns, ignore_patterns=ignore, cache_dir=cache_dir)]
    if preset.checkpoint:
        ckpt = preset.checkpoint
        paths.append(hf_hub_download(ckpt.repo_id, ckpt.filename, cache_dir=cache_dir))
    return paths
