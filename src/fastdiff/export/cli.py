"""`fastdiff export onnx|web`: ONNX files with their manifest, or a static site that generates in the browser."""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from ..cli_options import add_size_options, add_weight_options
from ..errors import FastDiffError

__all__ = ["add_export_arguments", "run_export"]


def _common(parser: argparse.ArgumentParser, *, default_dtype: str) -> None:
    parser.add_argument("--preset", help="a preset name (see `fastdiff presets`)")
    add_weight_options(parser)
    parser.add_argument("--out", required=True, help="output folder (created if missing), for one --height/--width")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        default=default_dtype,
        help=f"weights as stored in the files; computation stays float32 (default: {default_dtype})",
    )
    add_size_options(parser)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The `onnx` and `web` subcommands of `fastdiff export`."""
    sub = parser.add_subparsers(dest="export_command", required=True)
    onnx = sub.add_parser("onnx", help="text encoder(s), UNet and VAE decoder as ONNX, checked with onnxruntime")
    _common(onnx, default_dtype="float32")
    onnx.add_argument("--tiny-vae", help="export this tiny autoencoder (a hub id or folder, or 'auto') as decoder")
    web = sub.add_parser("web", help="a static site that generates as you type (onnxruntime-web, no server)")
    _common(web, default_dtype="float16")
    web.add_argument("--onnx", help="build the site from this `fastdiff export onnx` folder instead of --preset")


def _generator(args: argparse.Namespace) -> Any:
    from .._quiet import quiet_library_logs
    from ..families import family
    from ..generator import FewStepGenerator
    from ..presets import get

    if family(get(args.preset).family).denoiser != "unet":  # refused before anything large loads
        raise FastDiffError(f"{args.preset}: export covers the UNet families (SD 1.x/2.x, SDXL), not transformers yet")
    quiet_library_logs()
    return FewStepGenerator.from_preset(
        args.preset,
        source=args.source,
        checkpoint=args.checkpoint,
        allow_pickle=args.allow_pickle,
        device="cpu",
        dtype="float32",
        optimize="none",
    )


def run_export(args: argparse.Namespace) -> int:
    """Load the preset on the CPU in float32, export, and print what was written."""
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise FastDiffError(f"export needs {', '.join(missing)}: pip install 'fastdiff[web]'")
    return _run_onnx(args) if args.export_command == "onnx" else _run_web(args)


def _run_onnx(args: argparse.Namespace) -> int:
    import torch

    from ..loading import load_tiny_vae
    from .onnx import export_onnx

    if args.preset is None:
        raise FastDiffError("fastdiff export onnx needs --preset NAME")
    gen = _generator(args)
    tiny = None if args.tiny_vae is None else load_tiny_vae(args.tiny_vae, gen.preset, dtype=torch.float32)
    done = export_onnx(gen, args.out, dtype=args.dtype, height=args.height, width=args.width, tiny_vae=tiny)
    print(done.summary())
    print(f"wrote {done.folder} in {done.seconds:.0f} s")
    return 0


def _run_web(args: argparse.Namespace) -> int:
    from .web import build_site, export_web

    if (args.preset is None) == (args.onnx is None):
        raise FastDiffError("fastdiff export web needs --preset NAME or --onnx DIR (one of them)")
    if args.onnx is not None:
        site = build_site(args.onnx, args.out)
    else:
        site = export_web(_generator(args), args.out, dtype=args.dtype, height=args.height, width=args.width)
    for name, spec in site.manifest["models"].items():
        print(f"{name + '.onnx':<20} {spec['bytes'] / 1e6:8.2f} MB")
    total = sum(site.sizes().values())
    print(f"wrote {site.folder} ({total / 1e6:.1f} MB with onnxruntime-web {site.ort_version}); serve it with")
    print(
        f"  python -m http.server --directory {site.folder} --bind 127.0.0.1 8000   # then open http://127.0.0.1:8000"
    )
    return 0
