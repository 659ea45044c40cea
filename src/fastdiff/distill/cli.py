"""`fastdiff distill`: ADD-train a few-step student from a teacher preset or folder, write it as a preset.

Multi-GPU: `accelerate launch -m fastdiff.cli distill …` (the trainer runs under `accelerate.Accelerator`).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..errors import FastDiffError
from .config import ADDConfig

__all__ = ["add_distill_arguments", "run_distill"]

_KNOBS = [f for f in dataclasses.fields(ADDConfig) if "help" in f.metadata]  # the fields with a flag


def add_distill_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `fastdiff distill`."""
    parser.add_argument("--teacher", required=True, help="a preset name, a diffusers folder, or a preset .json file")
    parser.add_argument("--data", required=True, help="'shapes', or a folder of images with same-name .txt captions")
    parser.add_argument("--out", required=True, help="output folder: checkpoints, logs, pipeline/ and preset.json")
    parser.add_argument("--name", help="name of the student's preset (default: the output folder's name)")
    parser.add_argument("--resolution", type=int, help="image side (default: 64 for shapes, else the teacher's)")
    parser.add_argument("--num-images", type=int, default=4096, help="size of the drawn shapes set")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--cache-dir", help="Hugging Face cache holding a preset teacher (default: the usual one)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint under --out")
    for field in _KNOBS:
        flag, default = f"--{field.name.replace('_', '-')}", field.default
        parser.add_argument(
            flag, type=field.metadata["type"], default=default, help=f"{field.metadata['help']} ({default})"
        )


def _teacher(spec: str, cache_dir: str | None) -> tuple[Any, int, str]:
    """The teacher pipeline (float32, CPU), its native resolution and its licence."""
    from ..generator import FewStepGenerator
    from .export import load_preset_file

    path = Path(spec)
    if path.suffix == ".json" or (path.is_dir() and (path / "preset.json").is_file()):
        spec = load_preset_file(path, overwrite=True).name
    elif path.is_dir():
        from diffusers import AutoPipelineForText2Image

        auto: Any = AutoPipelineForText2Image
        pipe = auto.from_pretrained(str(path), dtype=torch.float32)
        return pipe, int(pipe.unet.config.sample_size) * 8, "unknown"
    generator = FewStepGenerator.from_preset(spec, device="cpu", dtype="float32", optimize="none", cache_dir=cache_dir)
    return generator.pipeline, generator.preset.height, generator.preset.license


def run_distill(args: argparse.Namespace) -> int:
    """Train, export `--out/pipeline` and `--out/preset.json`, print where they are."""
    from .data import image_folder, shapes_images
    from .export import export_student
    from .trainer import train

    config = ADDConfig(mixed_precision=args.mixed_precision, **{f.name: getattr(args, f.name) for f in _KNOBS})
    if args.data != "shapes" and not Path(args.data).is_dir():  # before the (slow) teacher load
        raise FastDiffError(f"--data {args.data!r} is neither 'shapes' nor a folder")
    pipe, native, licence = _teacher(args.teacher, args.cache_dir)
    resolution = args.resolution or (64 if args.data == "shapes" else native)
    if args.data == "shapes":
        images, captions = shapes_images(args.num_images, seed=args.seed, resolution=resolution)
    else:
        images, captions = image_folder(args.data, resolution=resolution)
    out = Path(args.out)
    config = dataclasses.replace(config, sample_prompts=tuple(captions[:4]))
    result = train(pipe, images, captions, out_dir=out, config=config, resume=args.resume)
    name = args.name or out.resolve().name
    preset = export_student(
        pipe, result.student, out, name=name, height=resolution, width=resolution, license=licence,
        prediction_type=config.student_prediction,
    )  # fmt: skip
    last = result.log[-1] if result.log else {}
    losses = ", ".join(f"{k}={last[k]:.4g}" for k in ("loss_distill", "loss_adv_g", "loss_d") if k in last)
    print(f"trained {result.step} steps ({losses}); student preset {name!r}: {preset}")
    return 0
