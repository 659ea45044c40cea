"""Throughput of N concurrent callers on one generator against a serialized loop (a benchmark, not a test).

    python benchmarks/concurrency_throughput.py                       # tiny sdxl-turbo, 64², CPU
    python benchmarks/concurrency_throughput.py --random-sdxl --size 256 --calls 8 --callers 1 4

Every row makes the same images (distinct prompts, seeds 0..K-1, one step). "serial" is one thread calling
`gen(...)` in a loop with `max_batch=1` (no queue: calls take turns on the generator's lock); "N callers" is N threads
sharing one generator with `max_batch=B`, so that calls queued behind a running one are coalesced. Each row warms up
once; the figure is images per second of wall time over all calls, and the median of `--repeats` runs. Print the CPU
with it (`lscpu`).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from fastdiff import FastDiffWarning, FewStepGenerator


def _pipeline(random_sdxl: bool) -> Any:
    if random_sdxl:
        from fastdiff.bench.architectures import architecture
        from fastdiff.bench.random_weights import pipeline_from, random_components
        from fastdiff.presets import SDXL_TURBO_REPO

        arch = architecture(SDXL_TURBO_REPO)
        return pipeline_from(arch, random_components(arch, device=torch.device("cpu"), dtype=torch.float32))
    from fastdiff.testing import tiny_pipeline
    from fastdiff.testing.repo_configs import SCHEDULER_CONFIGS

    return tiny_pipeline("sdxl", scheduler_config=SCHEDULER_CONFIGS["stabilityai/sdxl-turbo"])


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def _images_per_s(gen: FewStepGenerator, *, callers: int, calls: int, size: int, optimize_note: str) -> float:
    def one(i: int) -> None:
        gen(f"a red fox in the snow, take {i} ({optimize_note})", seed=i, height=size, width=size)

    one(10_000)  # warm-up: first-call costs (allocations, packed weights)
    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(one, range(calls)))
    return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random-sdxl", action="store_true", help="the real SDXL-Turbo architecture, random weights")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--calls", type=int, default=48, help="images per row")
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--max-batch", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--optimize", default="none", choices=["none", "default"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", FastDiffWarning)  # sizes below the native one, on purpose
    pipe = _pipeline(args.random_sdxl)
    what = "SDXL-Turbo (real architecture, random weights)" if args.random_sdxl else "tiny sdxl-turbo"
    print(f"{what}, {args.size}², 1 step, optimize={args.optimize}, {args.threads} torch threads, {_cpu_name()}")
    rows: list[tuple[str, float]] = []
    serial = FewStepGenerator.from_pipeline("sdxl-turbo", pipe, optimize=args.optimize, max_batch=1)
    runs = [
        _images_per_s(serial, callers=1, calls=args.calls, size=args.size, optimize_note="s")
        for _ in range(args.repeats)
    ]
    rows.append(("serial loop (max_batch=1)", statistics.median(runs)))
    for max_batch in args.max_batch:
        for callers in (c for c in args.callers if c > 1):
            gen = FewStepGenerator.from_pipeline("sdxl-turbo", pipe, optimize=args.optimize, max_batch=max_batch)
            runs = [
                _images_per_s(gen, callers=callers, calls=args.calls, size=args.size, optimize_note=f"{callers}")
                for _ in range(args.repeats)
            ]
            mean = gen.stats.mean_batch_size if gen.max_batch > 1 else 1.0  # max_batch=1: a lock, no queue
            rows.append((f"{callers} callers, max_batch={max_batch} (mean batch {mean:.2f})", statistics.median(runs)))
    base = rows[0][1]
    for name, value in rows:
        print(f"{name:<52} {value:8.2f} img/s  {value / base:5.2f}×")


if __name__ == "__main__":
    main()
