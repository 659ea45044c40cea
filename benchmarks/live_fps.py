"""Frames per second of a `LiveSession` on this machine, per optimization level, while the input keeps changing.

    python benchmarks/live_fps.py --preset sdxl-turbo --size 256 --levels none default max --seconds 30

Two input patterns, each for `--seconds`, after `gen.warmup()` at the size (timed apart):
- typing: the prompt grows by one character every 100 ms (a new prompt per frame: the text encoders run);
- slider: the seed moves every 100 ms under a fixed prompt (the embeddings come from the cache).
The session always generates the newest state, so frames per second is generations finished per second of
wall time, and latency is from an input event to the first frame that shows it (`LiveStats`). `--weights
random` is the real architecture with random weights (real timings, noise images); `tiny` the test models.
"""

from __future__ import annotations

import argparse
import threading
import time
import warnings

import torch

from fastdiff import FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.bench.random_weights import random_pipeline, random_tiny_vae
from fastdiff.serving import LiveSession

TEXT = "a watercolor painting of a lighthouse on a cliff at dawn, seagulls, soft light, detailed waves"


def drive(session: LiveSession, pattern: str, seconds: float, period: float = 0.1) -> tuple[float, float, float]:
    """Feed input events for `seconds`; (frames per second, latency p50, latency p95) of that stretch."""
    session.update(prompt=TEXT[:20], seed=0)
    session.wait(timeout=600)  # start from an idle session
    before = session.stats.generated
    stop = time.perf_counter() + seconds
    start = time.perf_counter()
    k = 0
    while time.perf_counter() < stop:
        k += 1
        if pattern == "typing":
            session.update(prompt=TEXT[: 20 + k % (len(TEXT) - 20)])
        else:
            session.update(seed=k)
        time.sleep(period)
    session.wait(timeout=600)  # the last event's frame
    elapsed = time.perf_counter() - start
    stats = session.stats
    return (stats.generated - before) / elapsed, stats.latency_p50 or 0.0, stats.latency_p95 or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sdxl-turbo")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--levels", nargs="+", default=["none", "default", "max"])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--weights", choices=["random", "tiny"], default="random")
    args = parser.parse_args()
    preset = args.preset
    if args.weights == "random":
        pipe = random_pipeline(presets.get(preset).repo_id, device=torch.device("cpu"), dtype=torch.float32)
    else:
        from fastdiff.testing import tiny_pipeline

        pipe = tiny_pipeline(presets.get(preset).family)
    recipe = Optimizations.level("default").recipe_for("cpu")
    engine = f"OpenVINO {recipe.openvino_precision}" if recipe.engine == "openvino" else "torch"
    print(f"{preset}, {args.weights} weights, {args.size}², {torch.get_num_threads()} threads, CPU engine: {engine}")
    size = {"height": args.size, "width": args.size}
    print("level    warm-up  typing fps  p50 latency  slider fps  p50 latency")
    for level in args.levels:
        optimize: str | Optimizations = level
        if level == "max" and args.weights == "random":  # TAESD's architecture with random weights: no download
            optimize = Optimizations.level(
                "max", tiny_vae=random_tiny_vae(device=torch.device("cpu"), dtype=torch.float32)
            )
        gen = FewStepGenerator.from_pipeline(preset, pipe, optimize=optimize)
        start = time.perf_counter()
        gen.warmup(**size)
        warm = time.perf_counter() - start
        row = [f"{level:<8} {warm:6.1f} s"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
            for pattern in ("typing", "slider"):
                with LiveSession(gen, **size) as session:
                    fps, p50, _ = drive(session, pattern, args.seconds)
                row.append(f"{fps:10.2f}  {p50 * 1000:8.0f} ms")
        print("  ".join(row), flush=True)
        del gen
        threading.Event().wait(0.1)


if __name__ == "__main__":
    main()
