"""pytest-benchmark entry for fastdiff's scenarios: `pytest benchmarks/` (see benchmarks/README.md).

By default every scenario runs on the tiny test models at 64×64 on this machine's device, so the whole run takes a
few minutes on a 2-core CPU; `--bench-weights random --bench-size 128` times the real architectures instead.
The `native` benchmarks run the real architectures at each preset's own size in half precision and need a GPU:
they are skipped where there is none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from fastdiff.bench.flops import FlopCache
from fastdiff.bench.report import device_description
from fastdiff.bench.runner import RunConfig, ScenarioRun
from fastdiff.bench.scenarios import DEFAULT_SCENARIOS, OPTIONAL_SCENARIOS, Scenario, parse_scenario, parse_scenarios
from fastdiff.bench.sources import ModelSource, Weights, make_source
from fastdiff.bench.timing import make_clock
from fastdiff.devices import resolve_device, resolve_dtype


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastdiff-bench", "fastdiff benchmark scenarios")
    group.addoption("--bench-weights", choices=("tiny", "random", "hub"), default="tiny", help="default: tiny")
    group.addoption("--bench-device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    group.addoption("--bench-dtype", default=None, help="default: float16 on a GPU, float32 on the CPU")
    group.addoption("--bench-size", default="64", help="square size in pixels, or 'native' (default: 64)")
    group.addoption("--bench-rounds", type=int, default=3, help="timed rounds per scenario (default: 3)")
    group.addoption("--bench-threads", type=int, default=None, help="CPU threads (default: the idle cores)")
    group.addoption(
        "--bench-scenarios",
        default=",".join(DEFAULT_SCENARIOS + OPTIONAL_SCENARIOS),
        help="comma-separated scenarios (default: the default and optional ones)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # pytest-benchmark warns at session end when every benchmark was skipped (no GPU, --bench-scenarios
    # filtering); under `filterwarnings = error` that would fail a run that skipped cleanly.
    config.addinivalue_line(
        "filterwarnings", "ignore:Not saving anything:pytest_benchmark.logger.PytestBenchmarkWarning"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario_name" in metafunc.fixturenames:
        scenarios = parse_scenarios([metafunc.config.getoption("--bench-scenarios")])
        metafunc.parametrize("scenario_name", [s.name for s in scenarios])


@dataclass
class BenchEnv:
    """What every benchmark of one kind shares: the run config, the model source and the FLOP cache."""

    label: str
    weights: Weights
    config: RunConfig
    source: ModelSource
    rounds: int
    flop_cache: FlopCache = field(default_factory=dict)

    def gpu_reason(self, scenario: Scenario) -> str | None:
        """Why `scenario` cannot run here without a GPU, or None when it can."""
        device, dtype = self.config.device, self.config.dtype
        if device.type == "cuda":
            return None
        if self.weights != "tiny" and self.config.height is None:
            preset = scenario.preset
            return (
                f"{scenario.name} on the real architecture at its native {preset.width}x{preset.height} takes "
                f"minutes per image on {device.type}: needs a CUDA GPU (or pass --bench-size 128 to time it small)"
            )
        if device.type == "cpu" and dtype != torch.float32:
            return f"{str(dtype).removeprefix('torch.')} on the CPU is orders of magnitude slower: needs a CUDA GPU"
        return None
        if device.type == "cpu" and dtype != torch.float32:
            return f"{str(dtype).removeprefix('torch.')} on the CPU is orders of magnitude slower: needs a GPU"
        if self.weights != "tiny" and self.config.height is None:
            preset = scenario.preset
            return (
                f"{scenario.name} on the real architecture at its native {preset.width}x{preset.height} takes "
                "minutes per image here: needs a GPU (or pass --bench-size 128 to time it small)"
            )
        return None


def _env(
    label: str, weights: Weights, device_name: str, dtype: str | None, size: int | None, options: pytest.Config
) -> BenchEnv:
    device = resolve_device(device_name)
    rounds = options.getoption("--bench-rounds")
    config = RunConfig(
        device=device,
        dtype=resolve_dtype(dtype, device),
        height=size,
        width=size,
        repeats=rounds,
        warmup=1,
        device_name=device_description(device),
        threads=options.getoption("--bench-threads"),  # None: the cores idle when each scenario starts
    )
    source = make_source(weights, device=device, dtype=config.dtype, clock=make_clock(device))
    return BenchEnv(label, weights, config, source, rounds)


def _bench(benchmark: Any, scenario_name: str, env: BenchEnv) -> None:
    """Warm up (timed apart), `benchmark.pedantic` over synchronized runs, then stages/memory/FLOPs as extra_info."""
    scenario = parse_scenario(scenario_name)
    reason = env.gpu_reason(scenario)
    if reason:
        pytest.skip(reason)
    benchmark.group = env.label
    with ScenarioRun(scenario, env.source, env.config) as run:
        run.warm_up()
        benchmark.pedantic(run.run, rounds=env.rounds, iterations=1)
    row = run.row(env.flop_cache)
    info = row.as_dict()
    keys = (
        "preset", "runner", "steps", "height", "width", "stages_s", "stages_method", "unet_calls", "per_unet_call_s",
        "load_s", "load_shared", "warmup_s", "peak_memory_bytes", "memory_kind", "gflops", "gflops_by_stage",
        "tflops_per_s", "peak_fraction",
    )  # fmt: skip
    benchmark.extra_info.update({key: info[key] for key in keys})
    benchmark.extra_info.update(
        weights=env.weights, device=env.config.device_name, dtype=str(env.config.dtype).removeprefix("torch.")
    )
    assert row.unet_calls >= 1 and row.gflops > 0
    assert sum(row.stages_s.values()) <= 1.05 * row.latency_s["p95"]


@pytest.fixture
def bench_scenario() -> Callable[[Any, str, BenchEnv], None]:
    """`bench_scenario(benchmark, name, env)`: benchmark one scenario (skipped when it needs an absent GPU)."""
    return _bench


@pytest.fixture(scope="session")
def bench_env(request: pytest.FixtureRequest) -> Iterator[BenchEnv]:
    """The environment the command line asks for (tiny weights at 64×64 by default)."""
    option = request.config.getoption
    size_text = option("--bench-size")
    size = None if size_text == "native" else int(size_text)
    label = f"{option('--bench-weights')} {size_text if size else 'native'}"
    env = _env(
        label,
        option("--bench-weights"),
        option("--bench-device"),
        option("--bench-dtype"),
        size,
        request.config,
    )
    yield env
    env.source.release()


@pytest.fixture(scope="session")
def native_env(request: pytest.FixtureRequest) -> Iterator[BenchEnv]:
    """The real architectures (random weights) at each preset's native size, in float16 on a GPU."""
    device = request.config.getoption("--bench-device")
    env = _env("random native", "random", device, "float16", None, request.config)
    yield env
    env.source.release()
