"""The Hugging Face hub, cache first: reads that make no network call when the files are cached, the error that
names what is missing, and `download` of exactly the files a preset needs. torch-free, so that the CLI can ask
"cached, or can the hub serve it?" before it imports torch: offline, the fix comes in a fraction of a second."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from huggingface_hub import (
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub.errors import HfHubHTTPError

from ._quiet import silenced
from .errors import FastDiffError
from .presets import Preset, is_shipped

if TYPE_CHECKING:
    import torch

__all__ = ["cache_first", "check_cached_or_reachable", "download", "download_tiny_vae", "fp16_variant"]

T = TypeVar("T")
TINY_VAE_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]
OFFLINE = "offline (HF_HUB_OFFLINE or local_files_only)"


def _dtype_name(dtype: torch.dtype | str) -> str:
    return str(dtype).removeprefix("torch.")


def fp16_variant(preset: Preset, dtype: torch.dtype | str, folder: str = "") -> str | None:
    """The preset's fp16 variant when loading float16, unless a local `folder` ships no variant files."""
    if _dtype_name(dtype) != "float16" or preset.variant is None:
        return None
    if folder and not any(Path(folder).glob(f"*/*.{preset.variant}.safetensors")):
        return None
    return preset.variant


def _weights_suffix(preset: Preset, dtype: torch.dtype | str) -> str:
    variant = fp16_variant(preset, dtype)
    return f".{variant}.safetensors" if variant else ".safetensors"


def _missing_files(
    preset: Preset, *, dtype: torch.dtype | str, cache_dir: str | Path | None = None, checkpoint: bool = True
) -> list[str]:
    """The hub files of `preset` for `dtype` that are not in the cache ("(pipeline)" for a whole pipeline repo);
    `checkpoint=False` leaves out the preset's UNet/LoRA file (a local one was given)."""
    missing = []
    ckpt = preset.checkpoint
    suffix = _weights_suffix(preset, dtype)
    # the denoiser's weights: a UNet, or a transformer (FLUX's, in shards: their index stands for them)
    denoiser = [f"{d}/diffusion_pytorch_model{suffix}{i}" for d in ("unet", "transformer") for i in ("", ".index.json")]
    if not isinstance(try_to_load_from_cache(preset.repo_id, "model_index.json", cache_dir=cache_dir), str):
        missing.append(f"{preset.repo_id} (pipeline)")  # the whole pipeline, its denoiser's weights included
    elif not (ckpt and ckpt.kind == "unet") and not any(
        isinstance(try_to_load_from_cache(preset.repo_id, p, cache_dir=cache_dir), str) for p in denoiser
    ):
        missing.append(f"{preset.repo_id} (unet/ or transformer/ weights, diffusion_pytorch_model{suffix})")
    cached = ckpt is None or isinstance(try_to_load_from_cache(ckpt.repo_id, ckpt.filename, cache_dir=cache_dir), str)
    if checkpoint and ckpt and not cached:
        missing.append(f"{ckpt.repo_id}/{ckpt.filename}")
    return missing


def _unreachable(repo_id: str) -> str | None:
    """Why the hub cannot serve `repo_id` now (offline mode, no connection), or None when it answers: one HEAD request
    without retries (huggingface_hub's downloads retry a refused connection for about 23 s before they give up)."""
    if constants.is_offline_mode():
        return OFFLINE
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "model_index.json"), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError:  # the hub answered (401 gated, 404, …): the download itself says what is wrong
        return None
    except Exception as err:  # requests', httpx's and httpx2's connection errors (by version) share no other base
        return f"the hub at {constants.ENDPOINT} is unreachable ({type(err).__name__}: {_first_line(err)})"
    return None


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [""])[0][:160]


def _missing_error(
    preset: Preset,
    cache_dir: str | Path | None,
    dtype: torch.dtype | str | None,
    *,
    why: str,
    what: str | None,
    err: Exception | None = None,
) -> FastDiffError:
    missing = [what] if what else _missing_files(preset, dtype=dtype or "float16", cache_dir=cache_dir)
    missing = missing or [_first_line(err) if err is not None else preset.repo_id]
    # No dtype yet (the CLI asks before torch can tell the device): both precisions, each where it runs.
    dtype_hint = f"--dtype {_dtype_name(dtype)}`" if dtype else "--dtype float16` (for a GPU; float32 for the CPU)"
    return FastDiffError(
        f"{preset.name}: files not in the Hugging Face cache and {why}: {', '.join(missing)}. "
        f"Run `fastdiff download {preset.name} {dtype_hint} on a machine with internet (same HF_HOME), "
        "or pass source= (--source) a local diffusers folder"
    )


def cache_first(
    fetch: Callable[..., T],
    preset: Preset,
    local_files_only: bool | None,
    cache_dir: str | Path | None,
    dtype: torch.dtype | str,
    *,
    what: str | None = None,
) -> T:
    """Call `fetch(local_files_only=...)`: the cache first when None, the network only for what is missing, and only
    once the hub answers (no retry loop when it cannot). The `local_dir_use_symlinks` warning that diffusers' hub
    reads trigger in huggingface_hub is silenced."""
    if local_files_only is None:
        try:
            with silenced("hub"):
                return fetch(local_files_only=True)
        except OSError as err:  # LocalEntryNotFoundError and diffusers' "not cached" are OSErrors
            if (why := _unreachable(preset.repo_id)) is not None:
                raise _missing_error(preset, cache_dir, dtype, why=why, what=what, err=err) from None
    try:
        with silenced("hub"):
            return fetch(local_files_only=bool(local_files_only))
    except OSError as err:
        why = OFFLINE if local_files_only or constants.is_offline_mode() else ""
        why = why or f"could not be downloaded ({type(err).__name__}: {_first_line(err)})"
        raise _missing_error(preset, cache_dir, dtype, why=why, what=what, err=err) from None


def check_cached_or_reachable(
    preset: Preset,
    *,
    dtypes: Sequence[torch.dtype | str],
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    checkpoint: bool = True,
) -> None:
    """Raise the one-line error now, before torch loads, when no dtype of `dtypes` has the preset's files in the
    cache and the hub cannot serve them (or `local_files_only`); `checkpoint=False`: a local UNet/LoRA file was
    given."""
    if is_shipped(preset):
        return
    missing = [_missing_files(preset, dtype=d, cache_dir=cache_dir, checkpoint=checkpoint) for d in dtypes]
    if not all(missing):
        return
    why = OFFLINE if local_files_only else _unreachable(preset.repo_id)
    if why is not None:
        dtype = dtypes[0] if len(dtypes) == 1 else None
        raise _missing_error(preset, cache_dir, dtype, why=why, what=", ".join(missing[0]))


def download(
    preset: Preset,
    *,
    dtype: torch.dtype | str = "float16",
    cache_dir: str | Path | None = None,
    allow_pickle: bool = False,
) -> list[str]:
    """Fetch only the files `preset` needs to run in `dtype` into the hub cache (nothing when they are cached),
    returning local paths."""
    if is_shipped(preset):
        return [preset.repo_id]  # in the package already
    if preset.checkpoint and preset.checkpoint.is_pickle and not allow_pickle:
        from .checkpoints import pickle_refusal  # torch: only on this path

        raise pickle_refusal(Path(preset.checkpoint.filename))
    suffix = _weights_suffix(preset, dtype)
    unet_from_checkpoint = preset.checkpoint is not None and preset.checkpoint.kind == "unet"

    def fetch(*, local_files_only: bool) -> list[str]:
        # The files of the modules model_index.json names (not e.g. SDXL base's unused `vae_1_0/`).
        where: dict[str, Any] = {"cache_dir": cache_dir, "local_files_only": local_files_only}
        index = hf_hub_download(preset.repo_id, "model_index.json", **where)
        patterns = ["model_index.json"]
        for folder, value in json.loads(Path(index).read_text()).items():
            if folder.startswith("_") or not isinstance(value, list):
                continue
            # configs, shard indexes, tokenizer vocabularies and merges, T5's SentencePiece model
            patterns += [f"{folder}/*.json", f"{folder}/*.txt", f"{folder}/*.model"]
            if not (folder == "unet" and unet_from_checkpoint):
                stem = suffix.removesuffix(".safetensors")  # "" or ".fp16"; shards: {name}{stem}-00001-of-00003…
                for name in ("diffusion_pytorch_model", "model"):
                    patterns += [f"{folder}/{name}{suffix}", f"{folder}/{name}{stem}-*-of-*.safetensors"]
        paths = [snapshot_download(preset.repo_id, allow_patterns=patterns, **where)]
        if ckpt := preset.checkpoint:
            paths.append(hf_hub_download(ckpt.repo_id, ckpt.filename, **where))
        return paths

    return cache_first(fetch, preset, None, cache_dir, dtype)


def download_tiny_vae(
    repo_id: str, *, preset: Preset, dtype: torch.dtype | str = "float16", cache_dir: str | Path | None = None
) -> str:
    """Fetch the tiny autoencoder `repo_id` that `preset` runs with at optimize="max" (cache first)."""
    fetch = partial(snapshot_download, repo_id, allow_patterns=TINY_VAE_FILES, cache_dir=cache_dir)
    return cache_first(fetch, preset, None, cache_dir, dtype, what=f"tiny VAE {repo_id}")
