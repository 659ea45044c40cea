"""The `fastdiff` command: presets, generate, download (and bench, demo when their extras are installed).

Bad input ends in one `error: …` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import presets as preset_table
from .errors import FastDiffError, FastDiffWarning

__all__ = ["main"]


def _quiet_libraries() -> None:
    """Keep diffusers/transformers progress bars and info logs out of a command-line tool's output."""
    from diffusers.utils import logging as diffusers_logging_module
    from transformers.utils import logging as transformers_logging_module

    diffusers_logging: Any = diffusers_logging_module
    transformers_logging: Any = transformers_logging_module

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def _presets_table() -> str:
    rows = [("name", "family", "steps", "guidance", "size", "licence")]
    for p in preset_table.all_presets():
        licence = p.license + ("" if p.commercial_use else " (non-commercial)")
        rows.append((p.name, p.family, p.steps_label(), f"{p.guidance_scale:g}", f"{p.width}x{p.height}", licence))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_presets(args: argparse.Namespace) -> int:
    print(_presets_table())
    return 0


def _output_paths(output: Path, count: int) -> list[Path]:
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(count)]


def _cmd_generate(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    from .generator import FewStepGenerator

    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise FastDiffError(f"--output must be a .png file, got {args.output!r}")
    if not output.parent.is_dir():
        raise FastDiffError(f"--output folder {str(output.parent)!r} does not exist; create it first")
    image = None
    if args.image is not None:
        try:
            image = Image.open(args.image).convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise FastDiffError(f"--image {args.image!r} is not a readable image ({err})") from None
    _quiet_libraries()
    gen = FewStepGenerator.from_preset(
        args.preset,
        source=args.source,
        checkpoint=args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        allow_pickle=args.allow_pickle,
    )
    result = gen(
        args.prompt,
        steps=args.steps,
        seed=args.seed,
        guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt,
        height=args.height,
        width=args.width,
        num_images=args.num_images,
        image=image,
        strength=args.strength,
    )
    for path, img in zip(_output_paths(output, len(result.images)), result.images, strict=True):
        img.save(path)
        print(f"wrote {path}")
    stages = "  ".join(f"{k} {v * 1000:.1f} ms" for k, v in result.timings.items())
    print(f"{result.preset} steps={result.steps} seed={result.seed} on {gen.device}: {stages}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .devices import resolve_device, resolve_dtype
    from .families import family
    from .hub import download

    preset = preset_table.get(args.name)
    # By default the files `from_preset` loads on this machine (fp16 variants on a GPU, fp32 on a CPU); a CPU box
    # that fetches for a GPU box says --dtype float16.
    dtype = resolve_dtype(args.dtype, resolve_device(args.device))
    tiny_vae = None if args.no_tiny_vae else family(preset.family).tiny_vae_repo
    for path in download(preset, dtype=dtype, allow_pickle=args.allow_pickle, tiny_vae=tiny_vae):
        print(path)
    return 0


def _add_generate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser("generate", help="generate image(s) from a prompt")
    gen.add_argument("prompt")
    gen.add_argument(
        "--preset",
        default=preset_table.DEFAULT_PRESET,
        help=f"a preset name (see `fastdiff presets`; default {preset_table.DEFAULT_PRESET}, shipped: no download)",
    )
    gen.add_argument("--source", help="local diffusers folder or single-file checkpoint (default: the hub repo)")
    gen.add_argument("--checkpoint", help="local UNet/LoRA file (default: the preset's file from the hub)")
    gen.add_argument("--steps", type=int)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--guidance-scale", type=float)
    gen.add_argument("--negative-prompt")
    gen.add_argument("--device", default="auto")
    gen.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    gen.add_argument("--height", type=int)
    gen.add_argument("--width", type=int)
    gen.add_argument("--num-images", type=int, default=1)
    gen.add_argument("--image", help="input image for img2img")
    gen.add_argument("--strength", type=float)
    gen.add_argument("--allow-pickle", action="store_true", help="allow .bin/.ckpt files (unpickled by torch)")
    gen.add_argument("--output", required=True, help="PNG file (with several images: NAME-0.png, NAME-1.png, …)")
    gen.set_defaults(func=_cmd_generate)


def _optional(module: str) -> ModuleType | None:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `fastdiff` command."""
    parser = argparse.ArgumentParser(prog="fastdiff", description="Few-step text-to-image diffusion.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the presets").set_defaults(func=_cmd_presets)
    _add_generate(sub)
    dl = sub.add_parser("download", help="fetch only the files a preset needs into the hub cache")
    dl.add_argument("name")
    dl.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        help="fetch the files for this dtype: float16 takes the fp16 variant files (default: what --device runs)",
    )
    dl.add_argument("--device", default="auto", help="the device the weights are for (picks the default dtype)")
    dl.add_argument("--allow-pickle", action="store_true", help="also fetch pickle checkpoints (DMD2's .bin)")
    dl.add_argument("--no-tiny-vae", action="store_true", help="skip the family's tiny autoencoder (optimize='max')")
    dl.set_defaults(func=_cmd_download)
    for name, module, add, run, text in (
        ("bench", "fastdiff.bench.cli", "add_bench_arguments", "run_bench", "time presets against SD 1.5@20"),
        ("demo", "fastdiff.demo", "add_demo_arguments", "run_demo", "a local Gradio page that follows your typing"),
        ("distill", "fastdiff.distill.cli", "add_distill_arguments", "run_distill", "ADD-train a few-step student"),
        ("batch", "fastdiff.bulk.cli", "add_batch_arguments", "run_batch", "every prompt of a file to DIR, resumable"),
        ("export", "fastdiff.export.cli", "add_export_arguments", "run_export", "ONNX files, or a page that runs them"),
        ("showcase", "fastdiff.distill.showcase", "add_showcase_arguments", "run_showcase", "the shipped models"),
    ):
        mod = _optional(module)
        if mod is not None:
            cmd = sub.add_parser(name, help=text)
            getattr(mod, add)(cmd)
            cmd.set_defaults(func=getattr(mod, run))
    return parser


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fastdiff` console script."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", FastDiffWarning)
        warnings.showwarning = _show_warning  # one line per warning, no source echo
        try:
            code: int = args.func(args)
        except FastDiffError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
