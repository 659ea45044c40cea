"""The options `fastdiff generate`, `batch` and `demo` share, so that they read and default alike: which weights,
what to sample, and the cache-or-hub check each makes before it imports torch."""

from __future__ import annotations

import argparse
from typing import Any

from . import presets as preset_table

__all__ = [
    "add_model_options",
    "add_sampling_options",
    "add_size_options",
    "add_weight_options",
    "check_before_loading",
    "load_options",
    "sampling_options",
]

OPTIMIZE_LEVELS = ("none", "default", "max")  # fastdiff.optimize.LEVELS, named here so --help needs no torch


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Which weights, on which device: the arguments of `FewStepGenerator.from_preset` of the same names."""
    add = parser.add_argument
    default = preset_table.DEFAULT_PRESET
    add(
        "--preset", default=default, help=f"a preset name (see `fastdiff presets`; default {default}: shipped, offline)"
    )
    add_weight_options(parser)
    add("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    add("--dtype", choices=["float32", "float16", "bfloat16"], help="default: float16 on a GPU, float32 on the CPU")
    add(
        "--optimize",
        choices=OPTIMIZE_LEVELS,
        default="default",
        help="none: diffusers' exact images; default: speedups within a tested tolerance; max: also the tiny VAE",
    )
    add("--cache-dir", help="Hugging Face cache folder (default: HF_HOME's)")
    add("--local-files-only", "--offline", action="store_true", help="load from the cache only, no network")


def add_weight_options(parser: argparse.ArgumentParser) -> None:
    """Which files hold the weights (`fastdiff export` takes these without the device and cache options)."""
    add = parser.add_argument
    add("--source", help="local diffusers folder, single-file checkpoint or hub repo (default: the preset's repo)")
    add("--checkpoint", help="local UNet/LoRA file (default: the preset's file from the hub)")
    add("--allow-pickle", action="store_true", help="allow .bin/.ckpt files (unpickled by torch)")


def add_size_options(parser: argparse.ArgumentParser) -> None:
    """The image size; None (the default) means the preset's."""
    parser.add_argument("--height", type=int, help="image height (default: the preset's)")
    parser.add_argument("--width", type=int, help="image width (default: the preset's)")


def add_sampling_options(parser: argparse.ArgumentParser, *, seed_default: int | None, seed_help: str) -> None:
    """What to sample; None (the default) means the preset's value."""
    add = parser.add_argument
    add("--steps", type=int, help="denoising steps (default: the preset's)")
    add("--seed", type=int, default=seed_default, metavar="SEED", help=seed_help)
    add("--guidance-scale", type=float, help="classifier-free guidance (default: the preset's)")
    add("--negative-prompt")
    add_size_options(parser)


def check_before_loading(args: argparse.Namespace, *, weights: bool = True) -> None:
    """Fail in one line, before torch loads: on a step count the preset does not run (first, so that nobody fetches
    a model to learn it), then, with `weights`, when the weights are neither cached nor downloadable."""
    preset_table.check_steps(preset_table.get(args.preset), getattr(args, "steps", None))
    if not weights:
        return
    from .hub import check_cached_or_reachable  # huggingface_hub: 0.2 s that --help does without

    if args.source is not None:  # a local folder or file, or another repo: loading checks it
        return
    check_cached_or_reachable(
        preset_table.get(args.preset),
        dtypes=[args.dtype] if args.dtype else ["float16", "float32"],  # the device's own needs torch to tell
        cache_dir=args.cache_dir,
        local_files_only=True if args.local_files_only else None,
        checkpoint=args.checkpoint is None,
    )


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `FewStepGenerator.from_preset` that `add_model_options` parsed (all but preset)."""
    names = ("source", "checkpoint", "device", "dtype", "optimize", "cache_dir", "allow_pickle")
    return {name: getattr(args, name) for name in names} | {"local_files_only": True if args.local_files_only else None}


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The generator's arguments that `add_sampling_options` parsed, but the seed (None: the preset's value)."""
    return {name: getattr(args, name) for name in ("steps", "negative_prompt", "guidance_scale", "height", "width")}
