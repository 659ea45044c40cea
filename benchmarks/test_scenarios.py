"""One pytest-benchmark per scenario: `benchmark.pedantic` around one synchronized generation.

The timed target is `ScenarioRun.run`, which synchronizes the device before its last clock read, so
pytest-benchmark's own timer measures finished work. Warm-up runs are done (and timed) before, apart from the
rounds. `extra_info` carries what pytest-benchmark does not measure: stages, per-UNet-call time, memory, FLOPs.
"""

from __future__ import annotations

from typing import Any


def test_scenario(benchmark: Any, scenario_name: str, bench_env: Any, bench_scenario: Any) -> None:
    """The scenario as the command line asks (tiny models at 64×64 by default)."""
    bench_scenario(benchmark, scenario_name, bench_env)


def test_scenario_native(benchmark: Any, scenario_name: str, native_env: Any, bench_scenario: Any) -> None:
    """The scenario on its real architecture at its native size, in float16: needs a GPU, skipped without one."""
    bench_scenario(benchmark, scenario_name, native_env)
