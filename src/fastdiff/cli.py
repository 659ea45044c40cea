"""The `fastdiff` command. Bad input ends in one `error: …` line on stderr and exit status 2, never a traceback.
Nothing here imports torch at module level, and a subcommand's own module is imported only when it runs: `fastdiff
--help` starts in a fraction of a second, and a command that cannot reach its weights says so before torch loads."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from . import cli_options
from . import presets as preset_table
from ._quiet import quiet_library_logs
from .errors import FastDiffError, routed_warnings

__all__ = ["main"]


def _cmd_presets(args: argparse.Namespace) -> int:
    rows = [("name", "family", "steps", "guidance", "size", "licence")]
    for p in preset_table.all_presets():
        licence = p.license + ("" if p.commercial_use else " (non-commercial)")
        rows.append((p.name, p.family, p.steps_label(), f"{p.guidance_scale:g}", f"{p.width}x{p.height}", licence))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    print("\n".join(lines))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise FastDiffError(f"--output must be a .png file, got {args.output!r}")
    if not output.parent.is_dir():
        raise FastDiffError(f"--output folder {str(output.parent)!r} does not exist; create it first")
    cli_options.check_before_loading(args)
    from PIL import Image, UnidentifiedImageError

    image = None
    if args.image is not None:
        try:
            image = Image.open(args.image).convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise FastDiffError(f"--image {args.image!r} is not a readable image ({err})") from None
    from .generator import FewStepGenerator

    quiet_library_logs()
    gen = FewStepGenerator.from_preset(args.preset, **cli_options.load_options(args))
    sampling = cli_options.sampling_options(args)
    result = gen(
        args.prompt, seed=args.seed, num_images=args.num_images, image=image, strength=args.strength, **sampling
    )
    for i, img in enumerate(result.images):
        path = output if len(result.images) == 1 else output.with_name(f"{output.stem}-{i}{output.suffix}")
        img.save(path)
        print(f"wrote {path}")
    print(f"{result.preset} steps={result.steps} seed={result.seed} on {gen.device}: {_timings_line(result.timings)}")
    return 0


def _timings_line(timings: dict[str, float]) -> str:
    """The image's own time per stage; a one-off compile for this shape said apart (a later run reads it from disk)."""
    line = "  ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items() if k != "compile")
    if "compile" in timings:
        line += f"; plus {timings['compile']:.2f} s readying the CPU engine for this size (once per process)"
    return line


def _cmd_download(args: argparse.Namespace) -> int:
    from .hub import check_cached_or_reachable, download, download_tiny_vae

    preset = preset_table.get(args.name)
    # By default the files `from_preset` loads on --device (fp16 variants on a GPU, fp32 on a CPU). Only "auto" needs
    # torch to tell, asked once the files are known to be cached or downloadable.
    dtype = args.dtype or ("float32" if args.device == "cpu" else None)
    if dtype is None:
        check_cached_or_reachable(preset, dtypes=["float16", "float32"], checkpoint=True)
        from .devices import resolve_device, resolve_dtype

        dtype = str(resolve_dtype(None, resolve_device(args.device))).removeprefix("torch.")
    paths = download(preset, dtype=dtype, allow_pickle=args.allow_pickle)
    if not args.no_tiny_vae and not preset_table.is_shipped(preset):
        from .families import family  # diffusers: imported once the preset's own files are in

        if (tiny_vae := family(preset.family).tiny_vae_repo) is not None:
            paths.append(download_tiny_vae(tiny_vae, preset=preset, dtype=dtype))
    print("\n".join(paths))
    return 0


def _add_generate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser("generate", help="generate image(s) from a prompt")
    gen.add_argument("prompt")
    cli_options.add_model_options(gen)
    cli_options.add_sampling_options(
        gen, seed_default=None, seed_help="image i gets seed SEED+i (default: a random seed, printed)"
    )
    gen.add_argument("--num-images", type=int, default=1)
    gen.add_argument("--image", help="input image for img2img")
    gen.add_argument("--strength", type=float)
    gen.add_argument("--output", required=True, help="PNG file (with several images: NAME-0.png, NAME-1.png, …)")
    gen.set_defaults(func=_cmd_generate)


def _add_download(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


# Subcommands whose options and code live in their own module, imported only when it runs: (name, module, its
# function adding the options, its function running the command, help, the pip extra its imports may need).
_PLUGINS = (
    ("batch", "fastdiff.serving.bulk.cli", "add_batch_arguments", "run_batch", "every prompt of a file to DIR", "ray"),
    ("bench", "fastdiff.bench.cli", "add_bench_arguments", "run_bench", "time presets vs SD 1.5@20", "bench"),
    ("demo", "fastdiff.demo", "add_demo_arguments", "run_demo", "a local page that follows your typing", "demo"),
    ("distill", "fastdiff.distill.cli", "add_distill_arguments", "run_distill", "ADD-train a student", "distill"),
    ("export", "fastdiff.export.cli", "add_export_arguments", "run_export", "ONNX files, or a web page", "web"),
    ("showcase", "fastdiff.distill.showcase", "add_showcase_arguments", "run_showcase", "the shipped models", ""),
)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of the `fastdiff` command: with `argv`, only the module of the subcommand it names (its
    first word: `fastdiff` itself takes no option but --help) is imported, for its options; without, every one's."""
    command = None if argv is None else next((word for word in argv if not word.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="fastdiff", description="Few-step text-to-image diffusion.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the presets").set_defaults(func=_cmd_presets)
    _add_generate(sub)
    _add_download(sub)
    for name, module_name, add, run, help, extra in _PLUGINS:
        cmd = sub.add_parser(name, help=help)
        if argv is not None and name != command:  # named in `fastdiff --help` only
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            fix = f"pip install 'fastdiff[{extra}]'" if extra else "reinstall fastdiff"
            raise FastDiffError(f"fastdiff {name} needs {err.name or err}: {fix}") from None
        getattr(module, add)(cmd)
        cmd.set_defaults(func=getattr(module, run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fastdiff` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with routed_warnings(lambda message: print(f"warning: {message}", file=sys.stderr)):  # one line, no source echo
        try:
            args = build_parser(argv).parse_args(argv)
            return int(args.func(args))
        except FastDiffError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
