"""Benchmark harness (`fastdiff bench`, docs/benchmarks.md): `scenarios` parses the rows, `sources` loads them
(`random_weights` builds the real `architectures`), `runner` times them (`timing`, `flops`), `report` writes the
results. Names load on first use, so `fastdiff bench` answers an unreachable hub before torch loads."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "architectures": ("ARCHITECTURES", "Architecture", "architecture"),
    "cli": ("add_bench_arguments", "run_bench"),
    "flops": ("ModuleProbe", "count_flops", "device_peak_tflops"),
    "random_weights": ("NotEnoughMemory", "random_pipeline"),
    "runner": ("BenchRow", "RunConfig", "ScenarioRun", "run_scenarios"),
    "scenarios": (
        "BASELINE",
        "DEFAULT_SCENARIOS",
        "OPTIONAL_SCENARIOS",
        "Scenario",
        "parse_scenario",
        "parse_scenarios",
    ),
    "sources": ("HubSource", "RandomSource", "make_source"),
    "timing": ("PeakMemory", "make_clock", "percentile", "summarize", "synchronize"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME_OF[name]}", __name__), name)
