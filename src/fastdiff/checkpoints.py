"""Weights applied on top of a pipeline, at load or later: full UNet state dicts (Lightning, DMD2) and LoRAs.

Every file is read and checked before any weight of the pipeline changes: a corrupt, missing or wrong-shape file
is refused with a `FastDiffError` and the pipeline is left as it was.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .errors import FastDiffError
from .hub import cache_first
from .presets import Preset, all_presets

__all__ = [
    "apply_checkpoint",
    "apply_lora",
    "build_unet",
    "checkpoint_path",
    "load_denoiser_checkpoint",
    "load_unet_state_dict",
    "lora_file",
    "pickle_refusal",
]

LORA_ADAPTER = "fastdiff"


def pickle_refusal(path: Path) -> FastDiffError:
    """The error for a pickle file loaded without `allow_pickle=True`."""
    return FastDiffError(
        f"{path.name} is a pickle file (torch.load can run code from it); pass allow_pickle=True "
        "(CLI: --allow-pickle) if you trust its source"
    )


def load_unet_state_dict(path: Path, *, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """Read a UNet checkpoint on the CPU: safetensors always, pickle (.bin/.pt) only when allowed."""
    if not path.is_file():
        raise FastDiffError(f"checkpoint {str(path)!r} does not exist; pass a path to a .safetensors file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise FastDiffError(
                f"checkpoint {path.name} is corrupt or not safetensors ({err}); download it again"
            ) from None
    if not allow_pickle:
        raise pickle_refusal(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged pickle
        raise FastDiffError(f"checkpoint {path.name} could not be read ({err}); download it again") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FastDiffError(f"checkpoint {path.name} does not hold a state dict of tensors")
    return state


def _check_fits(state: dict[str, torch.Tensor], module: Any, *, name: str) -> None:
    """Refuse a state dict that does not fit `module` (a UNet, a transformer) key for key and shape for shape."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = [f"{k} missing" for k in sorted(set(expected) - set(state))]
    problems += [f"{k} unexpected" for k in sorted(set(state) - set(expected))]
    problems += [
        f"{k}: {tuple(v.shape)} vs {expected[k]}" for k, v in state.items() if expected.get(k, v.shape) != v.shape
    ]
    if problems:
        raise FastDiffError(
            f"checkpoint {name} does not fit this {type(module).__name__} ({len(problems)} keys: "
            f"{'; '.join(problems[:3])}): it is for another model family or a different file; check the preset's "
            "checkpoint and source"
        )


def _check_checkpoint_matches(preset: Preset, path: Path) -> None:
    """Refuse a known checkpoint file of another preset (e.g. the 2-step Lightning UNet for the 4-step preset)."""
    owners = [p for p in all_presets() if p.checkpoint is not None and p.checkpoint.filename == path.name]
    # Only a name that one preset owns identifies a file: LCM's pytorch_lora_weights.safetensors says nothing.
    if len(owners) == 1 and owners[0].name != preset.name:
        raise FastDiffError(
            f"{path.name} is the checkpoint of preset {owners[0].name!r}, not {preset.name!r}; "
            f"use FewStepGenerator.from_preset({owners[0].name!r}, checkpoint=...)"
        )
    if preset.checkpoint is None:
        raise FastDiffError(
            f"{preset.name} takes no checkpoint (its weights are all in {preset.repo_id}); for a single-file "
            "model pass source= instead"
        )


def apply_lora(pipe: Any, path: Path, *, scale: float = 1.0, adapters: dict[str, float] | None = None) -> None:
    """Load a LoRA file at `scale`: fused into the base weights, its adapter layers dropped (no per-call cost); or,
    given `adapters` (the unfused LoRAs, name → scale, updated), one more peft adapter run by `set_adapters`."""
    try:
        with safe_open(str(path), framework="pt") as handle:  # the header only: no tensor is read
            keys = list(handle.keys())
    except (SafetensorError, OSError, ValueError) as err:
        raise FastDiffError(f"LoRA {path.name} is corrupt or not safetensors ({err}); download it again") from None
    if not any("lora" in k.lower() for k in keys):
        raise FastDiffError(
            f"{path.name} holds no LoRA weights; is it a full UNet or transformer checkpoint "
            "(`load_checkpoint`, kind='unet')?"
        )
    name = LORA_ADAPTER if adapters is None else f"lora{len(adapters) + 1}"
    had_adapters = bool(_adapter_names(pipe))
    try:
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
    except Exception as err:  # diffusers/peft raise ValueError, RuntimeError, KeyError… on a mismatched LoRA
        # undo the half-loaded LoRA: unwrap the peft layers, or drop only ours beside adapters already there
        if not had_adapters:
            pipe.unload_lora_weights()
        elif name in _adapter_names(pipe):
            pipe.delete_adapters(name)
        raise FastDiffError(
            f"LoRA {path.name} does not fit this pipeline ({type(err).__name__}: {str(err)[:200]}); "
            "it is for another model family"
        ) from None
    if adapters is None:
        pipe.fuse_lora(lora_scale=scale, adapter_names=[name])
        pipe.unload_lora_weights()  # the fused weights stay; the peft wrappers and their overhead go
    else:
        adapters[name] = scale
        pipe.set_adapters(list(adapters), adapter_weights=list(adapters.values()))


def _adapter_names(pipe: Any) -> set[str]:
    return {name for names in pipe.get_list_adapters().values() for name in names}


def build_unet(config: dict[str, Any], state: dict[str, torch.Tensor], *, name: str, dtype: torch.dtype) -> Any:
    """An SDXL/SD UNet from its config, filled from a checkpoint (no throw-away random init: built on meta)."""
    from diffusers import UNet2DConditionModel

    unet_class: Any = UNet2DConditionModel
    with torch.device("meta"):
        unet = unet_class.from_config(config)
    _check_fits(state, unet, name=name)
    unet.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return unet


def checkpoint_path(
    preset: Preset,
    checkpoint: str | Path | None,
    *,
    local_files_only: bool | None,
    cache_dir: str | Path | None,
    dtype: torch.dtype,
    allow_pickle: bool = True,
) -> Path | None:
    """The local path of the preset's checkpoint: the user's file (checked to be the preset's), or the preset's
    hub file (cache first); None for a preset without one."""
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, Path)):
            raise FastDiffError(f"checkpoint must be a path, not {type(checkpoint).__name__}")
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FastDiffError(f"checkpoint {str(checkpoint)!r} does not exist; pass the path of a weights file")
        _check_checkpoint_matches(preset, path)
        return path
    ckpt = preset.checkpoint
    if ckpt is None:
        return None
    if ckpt.is_pickle and not allow_pickle:  # refuse before a multi-GB download, not after
        raise pickle_refusal(Path(ckpt.filename))
    fetch = partial(hf_hub_download, ckpt.repo_id, ckpt.filename, cache_dir=cache_dir)
    return Path(cache_first(fetch, preset, local_files_only, cache_dir, dtype))


def apply_checkpoint(pipe: Any, preset: Preset, path: Path, *, allow_pickle: bool) -> None:
    """Put the preset's checkpoint into `pipe`'s UNet: a LoRA fused, or a full UNet state dict loaded in place."""
    assert preset.checkpoint is not None  # checkpoint_path() refuses a checkpoint for a preset without one
    if preset.checkpoint.kind == "lora":
        apply_lora(pipe, path)
    else:
        load_denoiser_checkpoint(pipe, path, allow_pickle=allow_pickle)


def load_denoiser_checkpoint(pipe: Any, path: Path, *, allow_pickle: bool, denoiser: str = "unet") -> None:
    """Load a full state dict into `pipe`'s denoiser (its UNet, or FLUX's transformer; compiled or not) in place,
    checked first."""
    module = getattr(pipe, denoiser)
    module = getattr(module, "_orig_mod", module)  # a compiled module's state dict keys start with _orig_mod.
    state = load_unet_state_dict(path, allow_pickle=allow_pickle)
    _check_fits(state, module, name=path.name)
    module.load_state_dict(state)


def lora_file(
    lora: str | Path, weight_name: str | None, *, local_files_only: bool | None, cache_dir: str | Path | None
) -> Path:
    """The LoRA file `load_lora` reads: a local file, a folder's `weight_name`, or a hub repo's (cache first)."""
    path = Path(lora).expanduser()
    if path.is_dir():
        if weight_name is None:
            raise FastDiffError(f"{str(path)!r} is a folder: pass weight_name= naming the LoRA file in it")
        path = path / weight_name
    if path.is_file():
        return path
    if isinstance(lora, str) and weight_name is not None and lora.count("/") == 1 and not lora.startswith((".", "/")):
        cached = try_to_load_from_cache(lora, weight_name, cache_dir=cache_dir)  # no network call when cached
        if isinstance(cached, str):
            return Path(cached)
        if local_files_only:
            raise FastDiffError(f"{lora}/{weight_name} is not in the Hugging Face cache; run once with network access")
        try:
            return Path(hf_hub_download(lora, weight_name, cache_dir=cache_dir))
        except OSError as err:
            raise FastDiffError(
                f"could not download {lora}/{weight_name} ({type(err).__name__}); check the names"
            ) from None
    raise FastDiffError(
        f"LoRA {str(lora)!r} does not exist; pass a .safetensors file, a folder with weight_name=, or a hub repo id "
        "with weight_name="
    )
