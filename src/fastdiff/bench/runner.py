"""Run scenarios the same way, in one process on one device: load, warm up, time the steady state, count FLOPs.
fastdiff rows' stage times are the generator's own (`GenerationResult.timings`); the plain-diffusers row is split
at module boundaries by forward hooks."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..denoising import STAGES
from ..errors import FastDiffError, FastDiffWarning
from ..openvino_engine import expected_shapes
from .flops import FlopCache, ModuleProbe, device_peak_tflops, stage_modules
from .scenarios import BASELINE, Scenario
from .sources import ModelSource
from .timing import Contention, PeakMemory, auto_cpu_threads, make_clock, percentile, round_order, summarize

__all__ = [
    "PROMPT",
    "BenchRow",
    "RunConfig",
    "ScenarioRun",
    "baseline_row",
    "run_interleaved",
    "run_scenarios",
    "set_speedup_vs_diffusers",
]

PROMPT = "a photo of an astronaut riding a horse on the moon"


@dataclass(frozen=True)
class RunConfig:
    """What every scenario shares: device, dtype, optional size override, repeats and warm-up runs."""

    device: torch.device
    dtype: torch.dtype
    height: int | None = None
    width: int | None = None
    repeats: int = 3
    warmup: int = 1
    repeat_prompt: bool = False  # True: one prompt for every run (embedding cache hits, as a live session's sliders)
    device_name: str = ""
    threads: int | None = None  # CPU threads; None: the cores idle when each scenario starts


@dataclass
class BenchRow:
    """One scenario's measurements; `as_dict()` is its JSON form."""

    scenario: str
    preset: str
    runner: str
    steps: int
    height: int
    width: int
    latency_s: dict[str, float]
    stages_s: dict[str, float]
    stages_method: str  # "fastdiff" (the generator's own timings) or "hooks" (module boundaries)
    load_s: float
    load_shared: bool
    warmup_s: float
    peak_memory_bytes: int
    memory_kind: str
    unet_calls: int
    per_unet_call_s: float
    gflops: float
    gflops_by_stage: dict[str, float]
    tflops_per_s: float
    peak_tflops: float | None
    peak_fraction: float | None
    images_per_s: float
    speedup_vs_baseline: float | None = None
    speedup_vs_diffusers: float | None = None  # median of per-round ratios to the `diffusers:` row of this work
    threads: int | None = None  # CPU intra-op threads used (None on GPUs)
    runs_s: list[float] = field(default_factory=list)
    major_faults: float | None = None  # median pages a timed run read back from disk (None: no getrusage)
    other_cpu_cores: float | None = None  # median cores other tasks kept busy during a timed run (None: unknown)

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON data."""
        return dict(self.__dict__)


class ScenarioRun:
    """One scenario loaded and hooked: inside its context (peak memory, hooks), `warm_up()`, then `run()` as often
    as wanted (synchronized, so pytest-benchmark may time it too), then `row()`."""

    def __init__(self, scenario: Scenario, source: ModelSource, config: RunConfig) -> None:
        self.scenario, self.config = scenario, config
        self.clock = make_clock(config.device)
        self.memory = PeakMemory(config.device)
        self.loaded = source.load(scenario)
        if self.loaded.generator is None:
            self.loaded.pipe.set_progress_bar_config(disable=True)
        self._probe = ModuleProbe(stage_modules(self.loaded.pipe), self.clock)
        self.warmup_s = 0.0
        self.totals: list[float] = []  # each timed run's seconds
        self.stages: list[dict[str, float]] = []
        self.method = "fastdiff"  # where stage times come from: the generator's own, else "hooks"
        self.unet_call_s: list[float] = []
        self.contention = Contention()  # what else the machine did during the timed runs
        self.peak_memory = 0
        self.threads: int | None = None
        self._threads_before = torch.get_num_threads()

    def __enter__(self) -> ScenarioRun:
        if self.config.device.type == "cpu":
            # The idle cores (run_interleaved decides once for its rows): a thread waiting on a core another process
            # holds stalls every parallel region.
            self.threads = self.config.threads or auto_cpu_threads()
            torch.set_num_threads(self.threads)
        self.memory.reset()
        self._probe.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._probe.__exit__(None, None, None)
        self.peak_memory = self.memory.read()
        if self.threads is not None:
            torch.set_num_threads(self._threads_before)

    def _call(self, prompt: str, seed: int) -> dict[str, float] | None:
        """One generation, as fastdiff runs it (returning its stage timings) or as the card's diffusers snippet."""
        config, steps, gen = self.config, self.scenario.steps, self.loaded.generator
        if gen is not None:
            with warnings.catch_warnings():
                # --height/--width below a preset's native size is the point of a quick CPU run, not a mistake.
                warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
                result = gen(prompt, steps=steps, seed=seed, height=config.height, width=config.width)
            return {k: v for k, v in result.timings.items() if k in STAGES}
        preset = self.scenario.preset
        given = {"height": config.height, "width": config.width, "max_sequence_length": preset.max_sequence_length}
        card = {k: v for k, v in given.items() if v is not None}  # T5 families' cards pass their prompt length
        guidance, generator = preset.guidance_scale, torch.Generator("cpu").manual_seed(seed)
        with torch.no_grad():
            self.loaded.pipe(
                prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, generator=generator, **card
            )
        return None

    def _prompt(self, tag: str) -> str:
        return PROMPT if self.config.repeat_prompt else f"{PROMPT}, {tag}"

    def warm_up(self, tick: Callable[[], None] = lambda: None) -> float:
        """`config.warmup` runs, or as many as the generator needs (two with CUDA graphs: the second records), timed
        apart (compilation, CUDA graphs, allocations, kernels); their seconds."""
        generator = self.loaded.generator
        runs = max(self.config.warmup, generator.warmup_runs if generator is not None else 0)
        start = self.clock()
        with expected_shapes():  # an OpenVINO row converts its shapes here, as warm-up should
            for i in range(runs):
                self._call(self._prompt(f"warm-up {i}"), i)
                tick()
        self.warmup_s = self.clock() - start
        return self.warmup_s

    def run(self) -> float:
        """One synchronized, recorded generation with a prompt never seen before; its seconds."""
        probe = self._probe
        probe.start_run()
        self.contention.start()
        start = self.clock()
        stages = self._call(self._prompt(f"take {len(self.totals)}"), len(self.totals))
        end = self.clock()
        self.contention.stop(end - start)
        probe.end_run()
        self.totals.append(end - start)
        if stages is None:
            stages, self.method = probe.split(start, end), "hooks"
        self.stages.append(stages)
        self.unet_call_s.extend(probe.durations("denoise"))
        return end - start

    def row(self, flop_cache: FlopCache | None = None) -> BenchRow:
        """The measurements so far (at least one `run()`), with FLOPs counted on the recorded shapes."""
        if not self.totals:
            raise ValueError("row() needs at least one run()")
        flops = self._probe.flops_by_stage(flop_cache)
        config, scenario = self.config, self.scenario
        peak = device_peak_tflops(config.device_name, config.dtype) if config.device.type == "cuda" else None
        latency = summarize(self.totals)
        per_s = 1.0 / latency["p50"] if latency["p50"] > 0 else 0.0  # a zero-time run only happens with fake clocks
        gflops = sum(flops.values()) / 1e9
        major_faults, other_cpu_cores = self.contention.medians()
        return BenchRow(
            scenario=scenario.name,
            preset=scenario.preset.name,
            runner=scenario.runner,
            steps=scenario.steps,
            height=config.height or scenario.preset.height,
            width=config.width or scenario.preset.width,
            latency_s=latency,
            stages_s={k: percentile([s[k] for s in self.stages], 50) for k in ("encode", "denoise", "decode")},
            stages_method=self.method,
            load_s=self.loaded.load_s,
            load_shared=self.loaded.shared,
            warmup_s=self.warmup_s,
            peak_memory_bytes=self.peak_memory,
            memory_kind=self.memory.kind,
            unet_calls=self._probe.calls("denoise"),  # the last run's, which every run makes alike
            per_unet_call_s=percentile(self.unet_call_s, 50) if self.unet_call_s else 0.0,
            gflops=gflops,
            gflops_by_stage={k: v / 1e9 for k, v in flops.items()},
            tflops_per_s=gflops * per_s / 1e3,
            peak_tflops=peak,
            peak_fraction=gflops * per_s / 1e3 / peak if peak else None,
            images_per_s=per_s,
            threads=self.threads,
            runs_s=self.totals,
            major_faults=major_faults,
            other_cpu_cores=other_cpu_cores,
        )


def run_interleaved(
    scenarios: list[Scenario],
    source: ModelSource,
    config: RunConfig,
    *,
    flop_cache: FlopCache | None = None,
    tick: Callable[[], None] = lambda: None,
) -> list[BenchRow]:
    """Rows doing the same work on the same weights, pairwise: all warm up, then each round runs every row once
    (drift hits all alike), in the orders of `round_order` (no row always runs after the same one)."""
    if config.repeats < 1 or config.warmup < 0:
        raise ValueError("repeats must be ≥ 1 and warmup ≥ 0")
    if config.device.type == "cpu" and config.threads is None:
        # Once for the group: rows compared round by round run on the same cores. Decided per row, one row got
        # 1 thread and the next 2 when kswapd happened to be runnable as the first started.
        config = replace(config, threads=auto_cpu_threads())
    runs = [ScenarioRun(scenario, source, config) for scenario in scenarios]  # all loaded before any probe hooks
    with ExitStack() as stack:
        for run in runs:
            stack.enter_context(run)
        for run in runs:
            run.warm_up(tick)
        for round_ in range(config.repeats):
            for index in round_order(len(runs), round_):
                runs[index].run()
                tick()
    return [run.row(flop_cache) for run in runs]


def run_scenarios(
    scenarios: list[Scenario],
    source: ModelSource,
    config: RunConfig,
    *,
    tick: Callable[[], None] = lambda: None,
    on_row: Callable[[BenchRow], None] = lambda row: None,
    on_skip: Callable[[Scenario, str], None] = lambda scenario, reason: None,
) -> list[BenchRow]:
    """Run every scenario in order (consecutive rows of the same preset and steps interleaved when they share
    weights; one fastdiff refuses, such as weights that cannot fit, is skipped and reported to `on_skip`), then set
    each row's speedups."""
    rows: list[BenchRow] = []
    flop_cache: FlopCache = {}
    same_work = itertools.groupby(scenarios, key=lambda s: (s.preset.name, s.steps) if source.shares_weights else id(s))
    try:
        for group in (list(group) for _, group in same_work):
            try:
                done = run_interleaved(group, source, config, flop_cache=flop_cache, tick=tick)
            except FastDiffError as err:  # weights that cannot fit, a dtype the model refuses: the next rows run
                source.release()
                for scenario in group:
                    on_skip(scenario, str(err))
                continue
            for row in done:
                rows.append(row)
                on_row(row)
    finally:
        source.release()
    baseline = baseline_row(rows)
    for row in rows:
        row.speedup_vs_baseline = baseline.latency_s["p50"] / row.latency_s["p50"] if baseline else None
    set_speedup_vs_diffusers(rows)
    return rows


def baseline_row(rows: list[BenchRow]) -> BenchRow | None:
    """The row speedups are relative to: sd15@20 when it ran, else the first row."""
    return next((r for r in rows if r.scenario == BASELINE), rows[0] if rows else None)


def set_speedup_vs_diffusers(rows: list[BenchRow]) -> None:
    """Each row's speedup over the plain-diffusers row of the same preset and steps: the median of the
    per-round ratios when both ran interleaved (same number of runs), else the ratio of the medians."""
    reference = {(r.preset, r.steps): r for r in rows if r.runner == "diffusers"}
    for row in rows:
        ref = reference.get((row.preset, row.steps))
        if ref is None:
            continue
        if len(ref.runs_s) == len(row.runs_s) and all(row.runs_s):
            row.speedup_vs_diffusers = percentile([a / b for a, b in zip(ref.runs_s, row.runs_s, strict=True)], 50)
        else:
            row.speedup_vs_diffusers = ref.latency_s["p50"] / row.latency_s["p50"]
