"""A user's load on the CPU: load time, warm-up (conversion or cached compile), call time and resident memory.

    python benchmarks/cpu_load.py --save-random /data/sdxl-turbo-random      # once: real config, random weights
    python benchmarks/cpu_load.py --source /data/sdxl-turbo-random --size 512  # first load: converts
    python benchmarks/cpu_load.py --source /data/sdxl-turbo-random --size 512  # again: the disk cache's IR

This is the path `FewStepGenerator.from_preset(..., source=folder)` takes, so the torch weights are what
diffusers makes of safetensors files: memory-mapped pages of the files (file-backed, which the kernel may drop
and read again), not a private copy. Memory is read from /proc/self/status: `RssAnon` (private memory: what
the engine holds), `RssFile` (mapped file pages) and `VmHWM` (the peak of both).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from fastdiff import FastDiffWarning, FewStepGenerator, presets

PROMPTS = [f"a photo of a {w} on a table, number {i}" for i, w in enumerate(("cup", "lamp", "book", "plant", "key"))]


def memory() -> str:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    gib = {k: int(fields[k].split()[0]) / 2**20 for k in ("RssAnon", "RssFile", "VmHWM")}
    return f"anon {gib['RssAnon']:.1f} GiB, file {gib['RssFile']:.1f} GiB, peak (VmHWM) {gib['VmHWM']:.1f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sdxl-turbo")
    parser.add_argument("--source", default=None, help="a diffusers folder (default: the preset's hub id)")
    parser.add_argument("--save-random", type=Path, default=None, help="write the random-weight folder and stop")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--optimize", default="default")
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    if args.save_random is not None:
        from fastdiff.bench.random_weights import random_pipeline

        pipe = random_pipeline(presets.get(args.preset).repo_id, device=torch.device("cpu"), dtype=torch.float32)
        pipe.save_pretrained(args.save_random)
        print(f"wrote {args.save_random}")
        return
    size = {"height": args.size, "width": args.size}
    start = time.perf_counter()
    gen = FewStepGenerator.from_preset(args.preset, source=args.source, device="cpu", optimize=args.optimize)
    loaded = time.perf_counter()
    print(f"load {loaded - start:.1f} s; {memory()}", flush=True)
    gen.warmup(**size)
    print(f"warm-up {time.perf_counter() - loaded:.1f} s; {memory()}", flush=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
        for i, prompt in enumerate(PROMPTS[: args.calls]):
            begin = time.perf_counter()
            gen(prompt, seed=i, **size)
            print(f"call {i}: {time.perf_counter() - begin:.2f} s (a new prompt); {memory()}", flush=True)


if __name__ == "__main__":
    main()
