"""Benchmark harness: few-step presets against the SD 1.5 baseline and plain diffusers, on one device.

The timing core (`timing`, `flops`) synchronizes before every clock read, keeps warm-up apart from the steady
state, reports percentiles, peak memory and FLOPs; `architectures` builds the real networks with random weights
so that `fastdiff bench --weights random` needs no download. See docs/benchmarks.md.

Names load on first use (PEP 562, as in `fastdiff`): `fastdiff bench` answers an unreachable hub before torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .architectures import ARCHITECTURES, Architecture, architecture
    from .cli import add_bench_arguments, run_bench
    from .flops import ModuleProbe, count_flops, device_peak_tflops
    from .random_weights import NotEnoughMemory, random_pipeline
    from .runner import BenchRow, RunConfig, ScenarioRun, run_scenario, run_scenarios
    from .scenarios import BASELINE, DEFAULT_SCENARIOS, OPTIONAL_SCENARIOS, Scenario, parse_scenario, parse_scenarios
    from .sources import HubSource, RandomSource, make_source
    from .timing import LatencySummary, PeakMemory, make_clock, percentile, summarize, synchronize

__all__ = [
    "ARCHITECTURES",
    "BASELINE",
    "DEFAULT_SCENARIOS",
    "OPTIONAL_SCENARIOS",
    "Architecture",
    "BenchRow",
    "HubSource",
    "LatencySummary",
    "ModuleProbe",
    "NotEnoughMemory",
    "PeakMemory",
    "RandomSource",
    "RunConfig",
    "Scenario",
    "ScenarioRun",
    "add_bench_arguments",
    "architecture",
    "count_flops",
    "device_peak_tflops",
    "make_clock",
    "make_source",
    "parse_scenario",
    "parse_scenarios",
    "percentile",
    "random_pipeline",
    "run_bench",
    "run_scenario",
    "run_scenarios",
    "summarize",
    "synchronize",
]

_MODULES = ("scenarios", "cli", "architectures", "timing", "flops", "random_weights", "sources", "runner")


def __getattr__(name: str) -> Any:
    """Import the module of a public name when it is first used, then keep the name as a plain attribute."""
    for module in _MODULES if name in __all__ else ():
        value = getattr(importlib.import_module(f".{module}", __name__), name, None)
        if value is not None:
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
