"""Images/s of `fastdiff batch` with 1 and 2 worker processes (a benchmark, not a test).

    python benchmarks/bulk_throughput.py                      # tiny sdxl-turbo at 64x64, --workers 1 then 2
    python benchmarks/bulk_throughput.py --count 400 --workers 1,2,4
    python benchmarks/bulk_throughput.py --random-sdxl        # real SDXL-Turbo architecture, random weights, 256²

Each run is the real command in a fresh folder (`python -m fastdiff.serving.bulk.cli ...`), printed before it runs. Two
figures per run: end to end (wall time of the command: imports, model loads, worker start-up) and steady state
(images between the first and the last manifest line, over that time, read by polling the manifest), which is what
a long run converges to. `--random-sdxl` saves a random-weight SDXL-Turbo (`fastdiff.bench`) as a diffusers folder
first: minutes and about 14 GiB of disk in float32.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _tiny_source(tmp: Path) -> list[str]:
    from fastdiff.testing import make_hf_cache

    make_hf_cache(tmp / "hf", ["sdxl-turbo"])
    return ["--cache-dir", str(tmp / "hf"), "--local-files-only", "--optimize", "none"]


def _random_sdxl_source(tmp: Path) -> list[str]:
    import torch

    from fastdiff.bench.random_weights import random_pipeline

    folder = tmp / "random-sdxl-turbo"
    random_pipeline("stabilityai/sdxl-turbo", device=torch.device("cpu"), dtype=torch.float32).save_pretrained(folder)
    return ["--source", str(folder), "--local-files-only"]


def _lines(manifest: Path) -> int:
    return manifest.read_bytes().count(b"\n") if manifest.exists() else 0


def _timed(command: list[str], manifest: Path) -> tuple[float, float, int]:
    """(wall seconds, steady-state images/s, images) of one run of `command`; steady state is the images after
    the first manifest line over the time from that line to the last (the manifest is polled every 5 ms)."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = last = 0.0
    seen = 0
    while child.poll() is None:
        if (lines := _lines(manifest)) > seen:
            last, seen = time.perf_counter(), lines
            first = first or last
        time.sleep(0.005)
    wall = time.perf_counter() - start
    lines = _lines(manifest)
    if child.returncode != 0 or lines < 2:
        raise SystemExit(f"failed (exit status {child.returncode}, {lines} images): {shlex.join(command)}")
    if lines > seen:  # the last images landed after the last poll
        last = start + wall
    print("   ", (child.stdout.read() if child.stdout else "").strip())
    return wall, (lines - 1) / (last - first), lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200, help="prompts per run")
    parser.add_argument("--size", type=int, help="square image size (default 64 tiny, 256 --random-sdxl)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: cores // workers)")
    parser.add_argument("--random-sdxl", action="store_true", help="the real SDXL-Turbo architecture, random weights")
    args = parser.parse_args()
    size = args.size or (256 if args.random_sdxl else 64)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        source = _random_sdxl_source(tmp) if args.random_sdxl else _tiny_source(tmp)
        prompts = tmp / "prompts.txt"
        prompts.write_text("".join(f"a photo of object number {i}\n" for i in range(args.count)), encoding="utf-8")
        for workers in (int(n) for n in args.workers.split(",")):
            out = tmp / f"out-{workers}"
            command = [sys.executable, "-m", "fastdiff.serving.bulk.cli", str(prompts), "--preset", "sdxl-turbo"]
            command += ["--out", str(out), "--device", "cpu", "--height", str(size), "--width", str(size)]
            command += [*source, "--workers", str(workers), "--no-progress"]
            command += ["--threads", str(args.threads)] if args.threads else []
            print("$", shlex.join(command))
            wall, steady, lines = _timed(command, out / "manifest.jsonl")
            print(
                f"    workers={workers}: {lines} images at {size}x{size} in {wall:.1f} s = {lines / wall:.2f} images/s "
                f"end to end; steady state {steady:.2f} images/s"
            )


if __name__ == "__main__":
    main()
