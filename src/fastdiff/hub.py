"""The Hugging Face hub, cache first: reads that make no network call when the files are cached, the error that
names what is missing, and `download` of exactly the files a preset needs (for the dtype it will run in)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from huggingface_hub import constants, hf_hub_download, snapshot_download, try_to_load_from_cache

from .errors import FastDiffError
from .presets import Preset, is_shipped

__all__ = ["cache_first", "download", "missing_files", "quietly"]

T = TypeVar("T")
TINY_VAE_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]


def _offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _weights_suffix(preset: Preset, dtype: torch.dtype) -> str:
    fp16 = dtype == torch.float16 and preset.variant is not None
    return f".{preset.variant}.safetensors" if fp16 else ".safetensors"


def missing_files(preset: Preset, *, dtype: torch.dtype, cache_dir: str | Path | None = None) -> list[str]:
    """The hub files of `preset` for `dtype` that are not in the cache ("(pipeline)" for a whole pipeline repo)."""
    missing = []
    ckpt = preset.checkpoint
    unet = f"unet/diffusion_pytorch_model{_weights_suffix(preset, dtype)}"
    for path in ["model_index.json"] + ([] if ckpt and ckpt.kind == "unet" else [unet]):
        if not isinstance(try_to_load_from_cache(preset.repo_id, path, cache_dir=cache_dir), str):
            missing.append(f"{preset.repo_id} ({'pipeline' if path == 'model_index.json' else path})")
    if ckpt and not isinstance(try_to_load_from_cache(ckpt.repo_id, ckpt.filename, cache_dir=cache_dir), str):
        missing.append(f"{ckpt.repo_id}/{ckpt.filename}")
    return missing


def _missing_error(
    preset: Preset, cache_dir: str | Path | None, dtype: torch.dtype, err: Exception, what: str | None
) -> FastDiffError:
    missing = ([what] if what else missing_files(preset, dtype=dtype, cache_dir=cache_dir)) or [
        str(err).splitlines()[0][:200]
    ]
    where = "offline (HF_HUB_OFFLINE or local_files_only)" if _offline() else "could not be downloaded"
    dtype_name = str(dtype).removeprefix("torch.")
    return FastDiffError(
        f"{preset.name}: files not in the Hugging Face cache and {where}: {', '.join(missing)}. "
        f"Run `fastdiff download {preset.name} --dtype {dtype_name}` on a machine with internet (same HF_HOME), "
        "or pass source= a local diffusers folder"
    )


def quietly(fetch: Callable[[bool], T], local: bool) -> T:
    """`fetch(local)` without the `local_dir_use_symlinks` warning diffusers still triggers in huggingface_hub on
    every load: noise the user can do nothing about (diffusers #1057-style warning fatigue)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)
        return fetch(local)


def cache_first(
    fetch: Callable[[bool], T],
    preset: Preset,
    local_files_only: bool | None,
    cache_dir: str | Path | None,
    dtype: torch.dtype,
    *,
    what: str | None = None,
) -> T:
    """Call `fetch(local_files_only)`: the cache first when None, the network only for what is missing."""
    if local_files_only is None:
        try:
            return quietly(fetch, True)
        except OSError as err:  # LocalEntryNotFoundError and diffusers' "not cached" are OSErrors
            if _offline():
                raise _missing_error(preset, cache_dir, dtype, err, what) from None
    try:
        return quietly(fetch, bool(local_files_only))
    except OSError as err:
        raise _missing_error(preset, cache_dir, dtype, err, what) from None


def _component_patterns(preset: Preset, suffix: str, cache_dir: str | Path | None) -> list[str]:
    """The files of the modules model_index.json names (not e.g. SDXL base's unused `vae_1_0/`)."""
    index = json.loads(Path(hf_hub_download(preset.repo_id, "model_index.json", cache_dir=cache_dir)).read_text())
    folders = [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)]
    unet_from_checkpoint = preset.checkpoint is not None and preset.checkpoint.kind == "unet"
    patterns = ["model_index.json"]
    for folder in folders:
        patterns += [f"{folder}/*.json", f"{folder}/*.txt"]  # configs, tokenizer vocabularies and merges
        if not (folder == "unet" and unet_from_checkpoint):
            patterns += [f"{folder}/diffusion_pytorch_model{suffix}", f"{folder}/model{suffix}"]
    return patterns


def download(
    preset: Preset,
    *,
    dtype: torch.dtype = torch.float16,
    cache_dir: str | Path | None = None,
    allow_pickle: bool = False,
    tiny_vae: str | None = None,
) -> list[str]:
    """Fetch only the files `preset` needs to run in `dtype` into the hub cache, returning local paths; also the
    tiny autoencoder repo `tiny_vae` (optimize="max"), so that every level then loads offline."""
    from .checkpoints import pickle_refusal

    if is_shipped(preset):
        return [preset.repo_id]  # in the package already
    if preset.checkpoint and preset.checkpoint.is_pickle and not allow_pickle:
        raise pickle_refusal(Path(preset.checkpoint.filename))
    patterns = _component_patterns(preset, _weights_suffix(preset, dtype), cache_dir)
    paths = [snapshot_download(preset.repo_id, allow_patterns=patterns, cache_dir=cache_dir)]
    if preset.checkpoint:
        ckpt = preset.checkpoint
        paths.append(hf_hub_download(ckpt.repo_id, ckpt.filename, cache_dir=cache_dir))
    if tiny_vae is not None:
        paths.append(snapshot_download(tiny_vae, allow_patterns=TINY_VAE_FILES, cache_dir=cache_dir))
    return paths
