"""How far `optimize="default"` (and `"max"`) move the image from fp32 `"none"` on a real architecture.

    python benchmarks/cpu_tolerance.py --preset sdxl-turbo --size 256 --prompts 3

Random weights on the real configs (`fastdiff.bench.random_weights`): the images are noise, but every module
runs at its real size and depth, so the rounding of bf16 (the OpenVINO engine's precision on CPUs with native
bf16) accumulates as it does in the real model. The tiny-model tests (tests/test_cpu_default.py) hold the same
comparison per family; the figures in docs/performance.md come from this script.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from fastdiff import FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.bench.random_weights import random_pipeline, random_tiny_vae
from fastdiff.openvino_cache import openvino_usable


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sdxl-turbo")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--levels", nargs="+", default=["default"])
    args = parser.parse_args()
    preset, repo = args.preset, presets.get(args.preset).repo_id
    pipe = random_pipeline(repo, device=torch.device("cpu"), dtype=torch.float32)
    exact = FewStepGenerator.from_pipeline(preset, pipe, optimize="none")
    precision = Optimizations.preset("default").resolved(torch.device("cpu")).openvino_precision
    engine = f"OpenVINO, {precision}" if openvino_usable() else "torch (no OpenVINO)"
    print(f"{repo} ({preset}), real architecture, random weights, {args.size}², engine {engine}")
    size = {"height": args.size, "width": args.size}
    prompts = [f"a photo of a {w} in the rain, number {i}" for i, w in enumerate(("fox", "boat", "lamp", "tree"))]
    for level in args.levels:
        optimize: str | Optimizations = level
        if level == "max":  # TAESD's architecture with random weights: nothing downloaded
            optimize = Optimizations.preset(
                "max", tiny_vae=random_tiny_vae(device=torch.device("cpu"), dtype=torch.float32)
            )
        gen = FewStepGenerator.from_pipeline(preset, pipe, optimize=optimize)
        start = time.perf_counter()
        gen.warmup(**size)
        print(f"{level}: warm-up {time.perf_counter() - start:.1f} s")
        for i, prompt in enumerate(prompts[: args.prompts]):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
                a = np.asarray(exact(prompt, seed=i, **size).images[0], np.int16)
                b = np.asarray(gen(prompt, seed=i, **size).images[0], np.int16)
            d = np.abs(a - b)
            print(f"  seed {i}: max {d.max()}/255, mean {d.mean():.2f}/255, PSNR {psnr(a, b):.1f} dB")
        del gen


if __name__ == "__main__":
    main()
