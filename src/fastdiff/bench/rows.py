"""One benchmark row (`BenchRow`, the JSON form of a scenario's measurements) and the ratios between rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .scenarios import BASELINE, Scenario
from .timing import Contention, percentile, summarize

__all__ = [
    "BUSY_CORES",
    "PRESSURE_FRACTION",
    "BenchRow",
    "Timed",
    "baseline_row",
    "contended",
    "measured_row",
    "pressured",
    "set_speedup_vs_diffusers",
]

# A row whose median timed run waited this share of its time for memory ran under memory pressure; a row whose
# working set fits waits next to nothing.
PRESSURE_FRACTION = 0.05
# A row whose median timed run had other tasks (another process, kswapd reclaiming memory, the hypervisor's
# steal) keep this many cores busy beside it shared the CPU: on 2 cores a tenth of a core is 5 % of it.
BUSY_CORES = 0.1


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
    memory_stall_s: float | None = None  # median seconds a timed run waited for memory or disk (None: no PSI)
    other_cpu_cores: float | None = None  # median cores other tasks kept busy during a timed run (None: unknown)

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON data."""
        return dict(self.__dict__)


@dataclass
class Timed:
    """What a scenario's runs measured, before it becomes a `BenchRow`."""

    warmup_s: float = 0.0
    totals: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    method: str = "fastdiff"
    unet_calls: int = 0
    unet_call_s: list[float] = field(default_factory=list)
    contention: Contention = field(default_factory=Contention)


def measured_row(
    scenario: Scenario,
    timed: Timed,
    flops: dict[str, int],
    *,
    height: int,
    width: int,
    load_s: float,
    load_shared: bool,
    peak_memory: int,
    memory_kind: str,
    peak_tflops: float | None,
) -> BenchRow:
    """The row of `scenario` from its runs (at least one) and the FLOPs counted on their shapes."""
    latency = summarize(timed.totals)
    stages = {k: percentile([s[k] for s in timed.stages], 50) for k in ("encode", "denoise", "decode")}
    gflops = sum(flops.values()) / 1e9
    per_s = 1.0 / latency.p50 if latency.p50 > 0 else 0.0  # a zero-time run only happens with fake clocks
    tflops_per_s = gflops * per_s / 1e3
    memory_stall_s, other_cpu_cores = timed.contention.medians()
    return BenchRow(
        scenario=scenario.name,
        preset=scenario.preset.name,
        runner=scenario.runner,
        steps=scenario.steps,
        height=height,
        width=width,
        latency_s=latency.as_dict(),
        stages_s=stages,
        stages_method=timed.method,
        load_s=load_s,
        load_shared=load_shared,
        warmup_s=timed.warmup_s,
        peak_memory_bytes=peak_memory,
        memory_kind=memory_kind,
        unet_calls=timed.unet_calls,
        per_unet_call_s=percentile(timed.unet_call_s, 50) if timed.unet_call_s else 0.0,
        gflops=gflops,
        gflops_by_stage={k: v / 1e9 for k, v in flops.items()},
        tflops_per_s=tflops_per_s,
        peak_tflops=peak_tflops,
        peak_fraction=tflops_per_s / peak_tflops if peak_tflops else None,
        images_per_s=per_s,
        runs_s=timed.totals,
        memory_stall_s=memory_stall_s,
        other_cpu_cores=other_cpu_cores,
    )


def pressured(row: BenchRow) -> bool:
    """Whether the row's timed runs waited for memory: the median stall ≥ `PRESSURE_FRACTION` of its p50."""
    return row.memory_stall_s is not None and row.memory_stall_s >= PRESSURE_FRACTION * row.latency_s["p50"]


def contended(row: BenchRow) -> bool:
    """Whether other tasks kept `BUSY_CORES` or more busy during the row's median timed run."""
    return row.other_cpu_cores is not None and row.other_cpu_cores >= BUSY_CORES


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
