"""FLOP counting on known layers, the stage probe, and the table of device peaks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastdiff.bench import flops
from fastdiff.bench.flops import ModuleProbe, count_flops, device_peak_tflops


def test_linear_flops_are_two_per_multiply_add() -> None:
    layer = nn.Linear(64, 128)
    assert count_flops(lambda: layer(torch.randn(8, 64))) == 2 * 8 * 64 * 128


def test_conv_flops() -> None:
    conv = nn.Conv2d(3, 16, 3, padding=1)
    # every output element (1×16×32×32) is a 3×3×3 dot product
    assert count_flops(lambda: conv(torch.randn(1, 3, 32, 32))) == 2 * (16 * 32 * 32) * (3 * 3 * 3)


def _toy() -> dict[str, list[nn.Module]]:
    torch.manual_seed(0)
    return {"encode": [nn.Linear(4, 8)], "denoise": [nn.Linear(8, 8)], "decode": [nn.Linear(8, 2)]}


def _run(stages: dict[str, list[nn.Module]], steps: int) -> None:
    with torch.no_grad():
        x = stages["encode"][0](torch.randn(3, 4))
        for _ in range(steps):
            x = stages["denoise"][0](x)
        stages["decode"][0](x)


def test_probe_counts_calls_times_them_and_counts_flops() -> None:
    stages = _toy()
    ticks = iter(range(100))
    with ModuleProbe(stages, lambda: float(next(ticks))) as probe:
        _run(stages, steps=3)
        _run(stages, steps=3)  # a second run before start_run accumulates
        probe.start_run()
        _run(stages, steps=3)
    assert (probe.calls("encode"), probe.calls("denoise"), probe.calls("decode")) == (1, 3, 1)
    assert probe.durations("denoise") == [1.0, 1.0, 1.0]  # each call reads the clock before and after
    _run(stages, steps=5)  # hooks are gone after the context: not recorded
    assert probe.calls("denoise") == 3
    assert probe.flops_by_stage() == {"encode": 2 * 3 * 4 * 8, "denoise": 3 * 2 * 3 * 8 * 8, "decode": 2 * 3 * 8 * 2}


def test_probe_split_adds_up_to_the_run() -> None:
    stages = _toy()
    ticks = iter(float(t) for t in range(10, 100))
    with ModuleProbe(stages, lambda: next(ticks)) as probe:
        _run(stages, steps=2)  # encode 10-11, denoise 12-15, decode 16-17
    split = probe.split(start=5.0, end=20.0)
    assert split == {"encode": 6.0, "denoise": 5.0, "decode": 4.0}
    assert sum(split.values()) == 15.0


def test_flop_cache_counts_each_module_and_shape_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[object] = []
    real = flops.count_flops
    monkeypatch.setattr(flops, "count_flops", lambda fn: counted.append(fn) or real(fn))
    stages, cache = _toy(), {}
    for _ in range(2):
        with ModuleProbe(stages, lambda: 0.0) as probe:
            _run(stages, steps=2)
        assert probe.flops_by_stage(cache)["denoise"] == 2 * 2 * 3 * 8 * 8
    assert len(counted) == 3 and len(cache) == 3


@pytest.mark.parametrize(
    ("name", "dtype", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", torch.float16, 989.0),
        ("NVIDIA H100 PCIe", torch.bfloat16, 756.0),
        ("NVIDIA H200", torch.bfloat16, 989.0),
        ("NVIDIA A100-SXM4-80GB", torch.float16, 312.0),
        ("NVIDIA A10G", torch.float16, 125.0),
        ("NVIDIA L40S", torch.float16, 362.0),
        ("NVIDIA L4", torch.float16, 121.0),
        ("NVIDIA H100 80GB HBM3", torch.float32, None),
        ("Some Future GPU", torch.float16, None),
    ],
)
def test_device_peaks(name: str, dtype: torch.dtype, peak: float | None) -> None:
    assert device_peak_tflops(name, dtype) == peak
