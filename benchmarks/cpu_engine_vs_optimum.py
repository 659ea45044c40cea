"""fastdiff's CPU engine against optimum-intel's OpenVINO diffusion pipelines, on the real architecture with
random weights: speed with a new prompt per call, first and cached load, peak memory, PSNR against plain
diffusers ("none").

    python benchmarks/cpu_engine_vs_optimum.py --preset sdxl-turbo --sizes 256 512 \\
        --folder /work/randweights/sdxl-turbo --optimum-python /work/venv-optimum/bin/python

optimum-intel 2.2 cannot be installed beside fastdiff (it needs huggingface-hub < 1.22, diffusers 0.42 needs
≥ 1.32), so its rows run in a separate environment (optimum-intel 2.2.0, diffusers 0.39.0, transformers < 5.6),
given by `--optimum-python`. Each row is its own process, one after another on the same CPU: plain diffusers,
fastdiff "default" with an empty disk cache (first load) and again (cached), optimum-intel exporting the folder
(first load) and loading its export (cached). Every row makes the same images: 1 step, guidance 0, prompt i with
`torch.Generator("cpu").manual_seed(i)`, so the latents are the same everywhere; PSNR is against plain
diffusers' image. This file runs in both environments: the workers import only what their environment has.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    "a red fox in the snow, photograph",
    "an astronaut riding a horse on the moon",
    "a bowl of ramen, studio lighting",
    "a lighthouse on a cliff at sunset",
    "a watercolor painting of a city street",
    "a macro photo of a dragonfly",
    "a cozy cabin in a pine forest",
    "a vintage car on a desert road",
]


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _images(call: Any, size: int, calls: int, out: Path, tag: str) -> list[float]:
    """Time `calls` calls at `size`, prompt i with seed i (the first call is the warm-up, not timed)."""
    import torch

    seconds = []
    for i in range(calls + 1):
        prompt = PROMPTS[i % len(PROMPTS)]
        start = time.perf_counter()
        image = call(prompt, size, torch.Generator("cpu").manual_seed(i))
        seconds.append(time.perf_counter() - start)  # seconds[0]: the warm-up call (conversion, compilation)
        image.save(out / f"{tag}-{size}-{i}.png")
    return seconds


def worker_diffusers(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from diffusers import AutoPipelineForText2Image

    start = time.perf_counter()
    pipe = AutoPipelineForText2Image.from_pretrained(args.folder, dtype=torch.float32)
    load = time.perf_counter() - start
    pipe.set_progress_bar_config(disable=True)

    def call(prompt: str, size: int, generator: Any) -> Any:
        run = pipe(prompt, num_inference_steps=1, guidance_scale=0.0, height=size, width=size, generator=generator)
        return run.images[0]

    sizes = {size: _images(call, size, args.calls, args.out, "diffusers") for size in args.sizes}
    return {"load_s": load, "sizes": sizes, "peak_gib": _peak_gib()}


def worker_fastdiff(args: argparse.Namespace) -> dict[str, Any]:
    from fastdiff import FewStepGenerator

    start = time.perf_counter()
    gen = FewStepGenerator.from_preset(args.preset, source=args.folder, device="cpu", optimize="default")
    load = time.perf_counter() - start

    def call(prompt: str, size: int, generator: Any) -> Any:
        return gen(prompt, steps=1, height=size, width=size, generator=generator).images[0]

    sizes = {size: _images(call, size, args.calls, args.out, args.tag) for size in args.sizes}
    recipe = gen.optimizations
    return {"load_s": load, "sizes": sizes, "peak_gib": _peak_gib(), "recipe": repr(recipe)}


def worker_optimum(args: argparse.Namespace) -> dict[str, Any]:
    from optimum.intel import OVStableDiffusionPipeline, OVStableDiffusionXLPipeline

    cls = OVStableDiffusionXLPipeline if "xl" in args.preset else OVStableDiffusionPipeline
    export = Path(args.export)
    start = time.perf_counter()
    if (export / "model_index.json").is_file():
        pipe = cls.from_pretrained(export, compile=False)
    else:
        # load_in_8bit=False: f32 weights in the IR, as fastdiff keeps them (optimum compresses >1B models to int8
        # by default); both then compute in OpenVINO's precision for this CPU.
        pipe = cls.from_pretrained(args.folder, export=True, compile=False, load_in_8bit=False)
        pipe.save_pretrained(export)
    load = time.perf_counter() - start
    pipe.set_progress_bar_config(disable=True)
    sizes = {}
    for size in args.sizes:
        start = time.perf_counter()
        pipe.reshape(batch_size=1, height=size, width=size, num_images_per_prompt=1)  # static shapes, as documented
        _one_unet_batch(pipe.unet.model)
        pipe.compile()
        compile_s = time.perf_counter() - start

        def call(prompt: str, size: int, generator: Any, pipe: Any = pipe) -> Any:
            run = pipe(prompt, num_inference_steps=1, guidance_scale=0.0, height=size, width=size, generator=generator)
            return run.images[0]

        sizes[size] = _images(call, size, args.calls, args.out, args.tag)
        sizes[size][0] += compile_s  # the warm-up: compiling for this size, then the first call
    return {"load_s": load, "sizes": sizes, "peak_gib": _peak_gib()}


def worker_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Write the preset's real architecture with random weights (fastdiff's bench fill, seed 0) as a diffusers
    folder, once."""
    import torch

    from fastdiff import presets
    from fastdiff.bench.architectures import architecture
    from fastdiff.bench.random_weights import pipeline_from, random_components

    folder = Path(args.folder)
    if not (folder / "model_index.json").is_file():
        arch = architecture(presets.get(args.preset).repo_id)
        components = random_components(arch, device=torch.device("cpu"), dtype=torch.float32)
        pipeline_from(arch, components).save_pretrained(folder)
    return {"folder": str(folder)}


def _one_unet_batch(model: Any) -> None:
    """optimum's `reshape` doubles the UNet's batch for classifier-free guidance whenever the UNet takes no
    `timestep_cond`, so a Turbo model at guidance 0 (batch 1) fails at the first call; set the batch back to 1
    with OpenVINO's public `Model.reshape`."""
    shapes = {}
    for port in model.inputs:
        shape = port.get_partial_shape()
        if shape.rank.is_static and shape.rank.get_length() > 0 and shape[0].is_static and shape[0].get_length() == 2:
            shape[0] = 1
        shapes[port] = shape
    model.reshape(shapes)


WORKERS = {
    "prepare": worker_prepare,
    "diffusers": worker_diffusers,
    "fastdiff": worker_fastdiff,
    "optimum": worker_optimum,
}


def _psnr(a: Path, b: Path) -> float:
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(a), np.float64)
    y = np.asarray(Image.open(b), np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return (
        ordered[len(ordered) // 2]
        if len(ordered) % 2
        else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    )


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"  # fastdiff's disk cache and optimum's export, kept for the cached rows of a rerun
    env = dict(os.environ, FASTDIFF_CACHE=str(work / "fastdiff-cache"), HF_HUB_OFFLINE="1")
    rows = [
        ("diffusers", "diffusers", sys.executable),
        ("fastdiff first load", "fastdiff", sys.executable),
        ("fastdiff cached", "fastdiff", sys.executable),
        ("optimum first load", "optimum", args.optimum_python),
        ("optimum cached", "optimum", args.optimum_python),
    ]
    results: dict[str, Any] = {}
    prepare = [sys.executable, __file__, "worker", "prepare", "--preset", args.preset, "--folder", args.folder]
    subprocess.run(prepare, env=env, check=True, capture_output=True)
    for label, worker, python in rows:
        tag = label.replace(" ", "-")
        command = [python, __file__, "worker", worker, "--preset", args.preset, "--folder", args.folder]
        command += ["--sizes", *map(str, args.sizes), "--calls", str(args.calls), "--out", str(out), "--tag", tag]
        command += ["--export", str(work / "optimum-export")]
        kept = out / f"{tag}.json"  # a row measured before (a run that failed later) is not run again
        if kept.is_file():
            results[label] = json.loads(kept.read_text())
            continue
        print(f"running {label} ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
        results[label] = json.loads(done.stdout.strip().splitlines()[-1])
        kept.write_text(json.dumps(results[label]))
    print(f"{args.preset}, 1 step, a new prompt per call; {args.calls} timed calls per size after one warm-up call")
    columns = ["row", "load s", "size", "warm-up s", "p50 s", "× diffusers", "PSNR vs diffusers dB (min)", "peak GiB"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|")
    base = {int(k): _median(v[1:]) for k, v in results["diffusers"]["sizes"].items()}
    for label, result in results.items():
        tag = label.replace(" ", "-")
        for size_key, seconds in result["sizes"].items():
            size = int(size_key)
            p50 = _median(seconds[1:])
            psnrs = [
                _psnr(out / f"{tag}-{size}-{i}.png", out / f"diffusers-{size}-{i}.png") for i in range(args.calls + 1)
            ]
            print(
                f"| {label} | {result['load_s']:.1f} | {size}² | {seconds[0]:.2f} | {p50:.3f} | "
                f"{base[size] / p50:.2f} | {_median(psnrs):.1f} ({min(psnrs):.1f}) | {result['peak_gib']:.1f} |"
            )
    if "recipe" in results.get("fastdiff cached", {}):
        print(f"fastdiff recipe: {results['fastdiff cached']['recipe']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "worker"])
    parser.add_argument("worker", nargs="?", choices=list(WORKERS))
    parser.add_argument("--preset", default="sdxl-turbo", choices=["sdxl-turbo", "sd-turbo"])
    parser.add_argument(
        "--folder", required=True, help="the random-weight diffusers folder of the preset's architecture"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--out", default="engine-images")
    parser.add_argument("--tag", default="")
    parser.add_argument("--export", default="")
    parser.add_argument("--optimum-python", default=str(Path("/work/venv-optimum/bin/python")))
    args = parser.parse_args()
    if args.mode == "worker":
        args.out = Path(args.out)
        print(json.dumps(WORKERS[args.worker](args)))
    else:
        run(args)


if __name__ == "__main__":
    main()
