"""The GPU check: one command that times the rows the GPU targets name and fails when a row is wrong.

    python benchmarks/gpu_check.py --device cuda --weights random --json gpu.json   # one H100/H200
    python benchmarks/gpu_check.py --device cpu --weights tiny --json out.json      # the same script, minutes here

UNet rows (fp16 on CUDA): plain diffusers and fastdiff "default" and "max" (tiny decoder, cached prompt) on
sdxl-turbo@1 at 512² (run interleaved on one set of weights), then fastdiff "default" on sdxl-lightning@4 at 1024²,
sd-turbo@1 and sd15@20 at 512². Flow rows (bf16 on CUDA, the cards' dtype): fastdiff "default" on every
flow-matching transformer preset whose configs fastdiff ships (`fastdiff.bench.architectures`), at its default
steps and 1024². `--rows unet|flow` runs one set (each fits a 10-minute slot on an H100). Random weights on the
real architectures (timings are real, images are noise); `tiny`: the same wiring at toy widths, 64²/128², fp32.
Each row reports p50/p95, warm-up time, recompiles after warm-up, the denoiser's MFU, peak memory, and checks every
image it made: a non-finite or all-zero latent, or a non-finite, black or flat image fails the row, as does any
recompile after warm-up. Exit status: 0 when every row passes, 1 otherwise, 2 on bad input. Loading, timing and
FLOP counting are `fastdiff.bench`'s (`RandomSource`, `ScenarioRun`, `ModuleProbe`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

try:  # a GPU image has torch; fastdiff's other dependencies come as wheels (docs/notes/performance-history.md)
    from fastdiff import FastDiffWarning, presets
except ImportError as missing:
    sys.exit(
        f"gpu_check: error: {missing}; install fastdiff with its dependencies (pip install -e .), or on a "
        "machine without network the wheels of docs/notes/performance-history.md#on-a-gpu-machine-without-network"
    )
from fastdiff.bench.architectures import ARCHITECTURES
from fastdiff.bench.flops import FlopCache, denoiser, device_peak_tflops, stage_modules
from fastdiff.bench.report import collect_meta, device_description, seconds
from fastdiff.bench.runner import PROMPT, BenchRow, RunConfig, ScenarioRun, set_speedup_vs_diffusers
from fastdiff.bench.scenarios import Scenario, parse_scenario
from fastdiff.bench.sources import RandomSource
from fastdiff.bench.timing import make_clock

# (scenario, side in pixels, one prompt for every run); rows of the same preset and steps run interleaved.
ROWS: tuple[tuple[str, int, bool], ...] = (
    ("diffusers:sdxl-turbo@1", 512, False),
    ("fastdiff:default:sdxl-turbo@1", 512, False),
    ("fastdiff:max:sdxl-turbo@1", 512, True),
    ("fastdiff:default:sdxl-lightning@4", 1024, False),  # right after the turbo rows: the SDXL weights are shared
    ("fastdiff:default:sd-turbo@1", 512, False),
    ("fastdiff:default:sd15@20", 512, False),
)


def flow_rows() -> tuple[tuple[str, int, bool], ...]:
    """fastdiff "default" at 1024² on each repo of a flow-matching transformer preset whose configs are shipped (a
    new family's row comes with its configs), at the preset's default steps."""
    by_repo: dict[str, str] = {}
    for name in presets.names():
        preset = presets.get(name)
        arch = ARCHITECTURES.get(preset.repo_id)
        if arch is not None and arch.denoiser == "transformer":
            by_repo.setdefault(preset.repo_id, f"fastdiff:default:{name}@{preset.default_steps}")
    return tuple((row, 1024, False) for row in by_repo.values())


FLOW_ROWS = flow_rows()
TINY_SIDE = {512: 64, 1024: 128}  # the tiny models keep the ratio of sizes at a fraction of the cost
DIFFUSERS_WARMUP = 2  # as many runs as gen.warmup() makes under reduce-overhead (the second records the CUDA graph)


def compile_count() -> int:
    """Frames torch.compile has converted so far in this process: a recompile adds one."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def _stats(x: torch.Tensor) -> torch.Tensor:
    """(B, 3): all finite, max, min of each item, computed on the device without a sync."""
    flat = x.detach().flatten(1).float()
    return torch.stack([torch.isfinite(flat).all(1).float(), flat.amax(1), flat.amin(1)], 1)


class OutputCheck:
    """Hooks on the denoiser (its outputs), the decoder's first module (the latents) and the decoder (the images).

    Rows may run the very same modules (a level that changes nothing, on shared weights), so a check records only
    inside `watching()`, around its own row's runs."""

    def __init__(self, pipe: Any) -> None:
        decode = stage_modules(pipe)["decode"]
        self._hooks = [
            denoiser(pipe).register_forward_hook(lambda m, a, out: self._add("unet", out)),
            decode[0].register_forward_pre_hook(lambda m, args: self._add("latents", args[0])),
            pipe.vae.decoder.register_forward_hook(lambda m, a, out: self._add("images", out)),
        ]
        self.seen: dict[str, list[torch.Tensor]] = {"unet": [], "latents": [], "images": []}
        self._active = False

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Record what the hooked modules compute inside this block only."""
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def _add(self, kind: str, out: Any) -> None:
        if not self._active:
            return
        tensor = out if isinstance(out, torch.Tensor) else out[0]  # (sample,) or a *ModelOutput
        if isinstance(tensor, list):  # Z-Image's transformer: one output per image
            tensor = torch.stack(tensor)
        self.seen[kind].append(_stats(tensor))

    def close(self) -> dict[str, int]:
        """Remove the hooks; counts of images checked and of each failure."""
        for hook in self._hooks:
            hook.remove()
        s = {k: torch.cat(v).cpu() if v else torch.zeros(0, 3) for k, v in self.seen.items()}
        images = s["images"]
        return {
            "images_checked": len(images),
            "nonfinite": int((s["unet"][:, 0] < 1).sum() + (s["latents"][:, 0] < 1).sum() + (images[:, 0] < 1).sum()),
            "zero_latents": int(((s["latents"][:, 1] == 0) & (s["latents"][:, 2] == 0)).sum()),
            "black_or_flat": int(((images[:, 1] <= -1) | (images[:, 1] == images[:, 2])).sum()),  # [-1, 1] images
        }


def passes(recompiles: int, checks: dict[str, int]) -> bool:
    """A row passes with no recompile after warm-up, at least one image checked and no bad output."""
    failures = checks["nonfinite"] + checks["zero_latents"] + checks["black_or_flat"]
    return recompiles == 0 and checks["images_checked"] > 0 and failures == 0


@dataclasses.dataclass
class Measured:
    """One scenario run: its ScenarioRun, output checks, recompiles after warm-up, warm-up seconds and size."""

    run: ScenarioRun
    check: OutputCheck
    side: int
    warmup_s: float = 0.0
    recompiles: int = 0


def _warm_up(m: Measured) -> None:
    gen, run = m.run.loaded.generator, m.run
    start = run.clock()
    if gen is None:
        run.warm_up()
    else:
        gen.warmup(height=m.side, width=m.side)  # two runs when compiled: compile, then CUDA-graph capture
        if run.config.repeat_prompt:  # the cached prompt's embeddings: every timed run is a cache hit
            gen(PROMPT, steps=run.scenario.steps, seed=0, height=m.side, width=m.side)
    m.warmup_s = run.clock() - start


def _measure_group(group: list[tuple[Scenario, int, bool]], source: RandomSource, base: RunConfig) -> list[Measured]:
    """Load every row of the group on shared weights, warm each up, then time them round by round."""
    runs = []
    for scenario, side, repeat in group:
        config = dataclasses.replace(base, height=side, width=side, repeat_prompt=repeat, warmup=DIFFUSERS_WARMUP)
        runs.append((ScenarioRun(scenario, source, config), side))
    # Hooks only once every row is loaded: fastdiff's module copies would copy the hooks of the rows before them.
    measured = [Measured(run, OutputCheck(run.loaded.pipe), side) for run, side in runs]
    with contextlib.ExitStack() as stack:
        for m in measured:
            stack.enter_context(m.run)
        for m in measured:
            with m.check.watching():
                _warm_up(m)
        for _ in range(base.repeats):
            for m in measured:
                before = compile_count()
                with m.check.watching():
                    m.run.run()
                m.recompiles += compile_count() - before
    return measured


def _row(m: Measured, flops: FlopCache, peak_tflops: float | None) -> tuple[BenchRow, dict[str, Any]]:
    checks = m.check.close()  # before the FLOP count, which runs the modules again
    row = m.run.row(flops)  # FLOPs counted on the eager modules (fastdiff.bench.flops.count_flops)
    row.warmup_s = m.warmup_s
    calls = max(row.unet_calls, 1)
    unet_tflops = row.gflops_by_stage["denoise"] / calls / row.per_unet_call_s / 1e3 if row.per_unet_call_s else 0.0
    extra = {
        "prompt": "cached" if m.run.config.repeat_prompt else "new",
        "recompiles_after_warmup": m.recompiles,
        **checks,
        "unet_tflops_per_s": unet_tflops,
        "device_peak_tflops": peak_tflops,
        "unet_mfu": unet_tflops / peak_tflops if peak_tflops else None,
        "ok": passes(m.recompiles, checks),
    }
    return row, extra


def run_check(
    device: torch.device, weights: str, repeats: int, rows: str = "all"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure the UNet rows (ROWS), the flow rows (FLOW_ROWS) or both; the JSON rows and the run's metadata."""
    cuda, tiny = device.type == "cuda", weights == "tiny"
    name = device_description(device)
    chosen = {"all": ROWS + FLOW_ROWS, "unet": ROWS, "flow": FLOW_ROWS}[rows]
    parsed = [(parse_scenario(s), TINY_SIDE[side] if tiny else side, r) for s, side, r in chosen]
    groups: list[list[tuple[Scenario, int, bool]]] = []
    for row in parsed:
        first = groups[-1][0][0] if groups else None
        if first is not None and (first.preset.name, first.steps) == (row[0].preset.name, row[0].steps):
            groups[-1].append(row)
        else:
            groups.append([row])
    results: list[tuple[BenchRow, dict[str, Any]]] = []
    flops: FlopCache = {}
    source: RandomSource | None = None
    try:
        for group in groups:
            flow = ARCHITECTURES[group[0][0].preset.repo_id].denoiser == "transformer"
            dtype = (torch.bfloat16 if flow else torch.float16) if cuda else torch.float32
            if source is None or source.dtype != dtype:  # one model in memory at a time
                if source is not None:
                    source.release()
                source = RandomSource(device=device, dtype=dtype, clock=make_clock(device), tiny=tiny)
            base = RunConfig(device=device, dtype=dtype, repeats=repeats, warmup=DIFFUSERS_WARMUP, device_name=name)
            for m in _measure_group(group, source, base):
                results.append(_row(m, flops, device_peak_tflops(name, dtype) if cuda else None))
                print(f"gpu_check: {m.run.scenario.name} done", file=sys.stderr, flush=True)
    finally:
        if source is not None:
            source.release()
    set_speedup_vs_diffusers([row for row, _ in results])
    dtypes = "float16 (UNet rows), bfloat16 (flow rows)" if cuda else "float32"
    meta = collect_meta(
        RunConfig(device=device, dtype=torch.float32, repeats=repeats, device_name=name), weights=weights
    )
    meta.update(dtype=dtypes, size="per row", repeat_prompt="per row", warmup="gen.warmup() / 2 runs for diffusers")
    return [{**row.as_dict(), **extra} for row, extra in results], meta


def _mfu(row: dict[str, Any]) -> str:
    return "-" if row["unet_mfu"] is None else f"{row['unet_mfu']:.1%}"


COLUMNS: tuple[tuple[str, Any], ...] = (
    ("scenario", lambda r: r["scenario"]),
    ("size", lambda r: f"{r['width']}x{r['height']}"),
    ("prompt", lambda r: r["prompt"]),
    ("p50", lambda r: seconds(r["latency_s"]["p50"])),
    ("p95", lambda r: seconds(r["latency_s"]["p95"])),
    ("warm-up", lambda r: seconds(r["warmup_s"])),
    ("recompiles", lambda r: str(r["recompiles_after_warmup"])),
    ("images ok", lambda r: f"{r['images_checked'] - r['black_or_flat']}/{r['images_checked']}"),
    ("denoiser TFLOP/s", lambda r: f"{r['unet_tflops_per_s']:.3f}"),
    ("MFU", _mfu),
    ("peak mem", lambda r: f"{r['peak_memory_bytes'] / 2**30:.2f} GiB"),
    ("vs diffusers", lambda r: "-" if r["speedup_vs_diffusers"] is None else f"{r['speedup_vs_diffusers']:.2f}×"),
    ("check", lambda r: "ok" if r["ok"] else "FAIL"),
)


def format_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The console table, headed by device, dtype, weights and torch version."""
    table = [[name for name, _ in COLUMNS], *([cell(r) for _, cell in COLUMNS] for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = f"{meta['device']} | {meta['dtype']} | weights: {meta['weights']} | {meta['repeats']} timed runs"
    return "\n".join([f"{head} | torch {meta['torch']}", *lines, f"note: {meta['note']}"])


@contextlib.contextmanager
def _quiet_small_sizes(weights: str) -> Iterator[None]:
    """The tiny models run below each preset's native size on purpose: that one warning is expected."""
    with warnings.catch_warnings():
        if weights == "tiny":
            warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
        yield


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 when every row passes, 1 when one fails, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--weights", choices=("random", "tiny"), default="random")
    parser.add_argument("--rows", choices=("all", "unet", "flow"), default="all", help="which rows (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row (default: 20 on CUDA, 2 on CPU)")
    parser.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="write one row per scenario")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device; use --device cpu --weights tiny here", file=sys.stderr)
        return 2
    repeats = args.repeats if args.repeats is not None else (20 if args.device == "cuda" else 2)
    if repeats < 1:
        print(f"gpu_check: error: --repeats must be ≥ 1, got {repeats}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with _quiet_small_sizes(args.weights), torch.no_grad():
        rows, meta = run_check(torch.device(args.device), args.weights, repeats, args.rows)
    meta["wall_s"] = time.perf_counter() - start
    print(format_table(rows, meta))
    print(f"wall time {meta['wall_s']:.1f} s")
    if args.json_path:
        path = Path(args.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        print(f"wrote {path}")
    failed = [r["scenario"] for r in rows if not r["ok"]]
    if failed:
        print(f"gpu_check: FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
