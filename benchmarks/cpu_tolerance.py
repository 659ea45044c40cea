"""How far `optimize="default"` (and `"max"`, and the int8 opt-ins) move the image from fp32 `"none"`.

    python benchmarks/cpu_tolerance.py --preset sdxl-turbo --size 256 --prompts 3
    python benchmarks/cpu_tolerance.py --preset fastdiff-shapes --prompts 48 --levels default default+int8

A hub preset runs on random weights on its real config (`fastdiff.bench.random_weights`): the images are
noise, but every module runs at its real size and depth, so the rounding of bf16 (the OpenVINO engine's
precision on CPUs with native bf16) accumulates as it does in the real model. A shipped preset
(`fastdiff-shapes`, its teacher) runs its own trained weights on the prompts of its evaluation set, and also
reports how many images the shipped classifier reads differently: a trained one-step model carries a UNet's
error into the image as random weights do not (tests/test_trained_tolerance.py). A level may name an
OpenVINO weight format as the bench's rows do (`default+int8-full`); `--torch-dtype bfloat16` adds a row of
the torch engine computing in that dtype. The figures in docs/notes/performance-history.md come from this script.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import numpy as np
import torch

from fastdiff import FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.bench.random_weights import random_pipeline, random_tiny_vae
from fastdiff.bench.scenarios import parse_scenario


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _prompts(preset: presets.Preset, count: int) -> tuple[list[str], Any]:
    if presets.is_shipped(preset):
        from fastdiff.distill.evaluation import eval_specs
        from fastdiff.distill.shapes import caption

        specs = eval_specs(count)
        return [caption(s) for s in specs], specs
    words = ("fox", "boat", "lamp", "tree")
    return [f"a photo of a {words[i % 4]} in the rain, number {i}" for i in range(count)], None


def _readings(images: np.ndarray, specs: Any) -> np.ndarray:
    """Per image, whether the shipped classifier reads all four attributes of its caption."""
    from fastdiff.distill.classifier import images_to_tensor, prompt_hits, shipped_classifier

    return prompt_hits(shipped_classifier().float(), images_to_tensor(images.astype(np.uint8)), specs)["all"].numpy()


def _optimizations(level: str, preset: presets.Preset, torch_dtype: str | None) -> str | Optimizations:
    if torch_dtype is not None and level == f"torch-{torch_dtype}":
        return Optimizations.level("default", engine="torch", precision=getattr(torch, torch_dtype))
    scenario = parse_scenario(f"fastdiff:{level}:{preset.name}@{preset.default_steps}")
    overrides: dict[str, Any] = {"openvino_weights": scenario.openvino_weights}
    if scenario.optimize == "max" and not presets.is_shipped(preset):  # TAESD's architecture, random weights
        overrides["tiny_vae"] = random_tiny_vae(device=torch.device("cpu"), dtype=torch.float32)
    return Optimizations.level(scenario.optimize, **overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sdxl-turbo")
    parser.add_argument("--size", type=int, default=None, help="height and width (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--levels", nargs="+", default=["default"], help="LEVEL or LEVEL+FORMAT")
    parser.add_argument("--torch-dtype", default=None, help="also the torch engine in this dtype, e.g. bfloat16")
    args = parser.parse_args()
    preset = presets.get(args.preset)
    trained = presets.is_shipped(preset)
    size = {"height": args.size or preset.height, "width": args.size or preset.width}
    levels = [*args.levels, *([f"torch-{args.torch_dtype}"] if args.torch_dtype else [])]
    if trained:
        pipe = FewStepGenerator.from_preset(preset, device="cpu", optimize="none").pipeline
    else:
        pipe = random_pipeline(preset.repo_id, device=torch.device("cpu"), dtype=torch.float32)
    exact = FewStepGenerator.from_pipeline(preset, pipe, optimize="none")
    recipe = Optimizations.level("default").recipe_for("cpu")
    engine = f"OpenVINO, {recipe.openvino_precision}" if recipe.engine == "openvino" else "torch"
    weights = "trained weights (shipped)" if trained else "real architecture, random weights"
    print(f"{preset.repo_id} ({preset.name}), {weights}, {size['height']}x{size['width']}, default engine {engine}")
    prompts, specs = _prompts(preset, args.prompts)

    def images(gen: FewStepGenerator) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
            calls = (gen(p, seed=i, steps=args.steps, **size) for i, p in enumerate(prompts))
            return np.stack([np.asarray(r.images[0], np.int16) for r in calls])

    reference = images(exact)
    readings = _readings(reference, specs) if trained else None
    if readings is not None:
        print(f"none: the classifier reads all four attributes right in {int(readings.sum())} of {len(prompts)} images")
    for level in levels:
        gen = FewStepGenerator.from_pipeline(preset, pipe, optimize=_optimizations(level, preset, args.torch_dtype))
        warmup = gen.warmup(**size)
        out = images(gen)
        scores = [psnr(a, b) for a, b in zip(out, reference, strict=True)]
        line = (
            f"{level}: warm-up {warmup:.1f} s | max {np.abs(out - reference).max()}/255, "
            f"mean {np.abs(out - reference).mean():.2f}/255, PSNR median {np.median(scores):.1f} dB, "
            f"worst {min(scores):.1f} dB"
        )
        if readings is not None:
            hits = _readings(out, specs)
            line += (
                f" | read right {int(hits.sum())}, {int((hits != readings).sum())} of {len(prompts)} read differently"
            )
        print(line, flush=True)
        del gen


if __name__ == "__main__":
    main()
