"""One benchmark row (`BenchRow`, the JSON form of a scenario's measurements) and the ratios between rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .scenarios import BASELINE
from .timing import percentile

__all__ = [
    "BUSY_CORES",
    "PRESSURE_FRACTION",
    "BenchRow",
    "baseline_row",
    "contended",
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
