"""benchmarks/gpu_check.py on the CPU with the tiny models: every row measured, finite, non-black, no recompile."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _script()


def test_cpu_tiny_run_writes_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    assert gpu_check.main(["--device", "cpu", "--weights", "tiny", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {row["scenario"]: row for row in data["rows"]}
    every = gpu_check.ROWS + gpu_check.FLOW_ROWS
    assert list(rows) == [name for name, _, _ in every]
    assert ("fastdiff:default:flux-schnell@4", 1024, False) in gpu_check.FLOW_ROWS  # its configs are shipped
    sizes = {name: gpu_check.TINY_SIDE[side] for name, side, _ in every}
    for name, row in rows.items():
        assert (row["height"], row["width"]) == (sizes[name], sizes[name])
        latency = row["latency_s"]
        assert all(math.isfinite(v) and v > 0 for v in latency.values()) and latency["p50"] <= latency["p95"]
        assert row["recompiles_after_warmup"] == 0 and row["ok"]
        # every run's image checked: warm-up (1 run; 2 for diffusers, 1 more for the cached prompt) and 2 timed
        warmups = 2 if name.startswith("diffusers:") else 1 + (row["prompt"] == "cached")
        assert row["images_checked"] == warmups + 2, name
        assert row["nonfinite"] == row["zero_latents"] == row["black_or_flat"] == 0
        assert row["unet_mfu"] is None and row["unet_tflops_per_s"] > 0  # no peak table entry for a CPU
        assert row["warmup_s"] > 0 and row["unet_calls"] == (21 if "sd15@20" in name else row["steps"])
        assert row["peak_memory_bytes"] > 0
    encode = {name: row["stages_s"]["encode"] for name, row in rows.items()}
    assert encode["fastdiff:max:sdxl-turbo@1"] < encode["diffusers:sdxl-turbo@1"]  # the cached prompt skips it
    assert rows["fastdiff:default:sdxl-turbo@1"]["speedup_vs_diffusers"] is not None
    table = capsys.readouterr().out
    assert all(name in table for name in rows) and "FAIL" not in table


def test_rows_flow_runs_the_flow_rows_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--rows flow` runs FLOW_ROWS and no UNet row (one flow row here: the run above covers every row)."""
    monkeypatch.setattr(gpu_check, "FLOW_ROWS", gpu_check.FLOW_ROWS[:1])
    out = tmp_path / "flow.json"
    arguments = ["--device", "cpu", "--weights", "tiny", "--rows", "flow", "--repeats", "1", "--json", str(out)]
    assert gpu_check.main(arguments) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["scenario"] for row in rows] == [gpu_check.FLOW_ROWS[0][0]]
    assert all(row["ok"] and (row["height"], row["width"]) == (128, 128) for row in rows)


def _pipe_like() -> Any:
    """The three modules the check hooks: a UNet, the decoder's first module and the decoder."""
    vae = torch.nn.Module()
    vae.post_quant_conv = torch.nn.Identity()
    vae.decoder = torch.nn.Identity()
    pipe = torch.nn.Module()
    pipe.unet, pipe.vae = torch.nn.Identity(), vae
    pipe.text_encoder = None
    return pipe


@pytest.mark.parametrize(
    ("latents", "images", "failure"),
    [
        (torch.randn(2, 4, 8, 8), torch.rand(2, 3, 64, 64) * 2 - 1, None),
        (torch.zeros(2, 4, 8, 8), torch.rand(2, 3, 64, 64) * 2 - 1, "zero_latents"),
        (torch.full((2, 4, 8, 8), math.nan), torch.rand(2, 3, 64, 64), "nonfinite"),
        (torch.randn(2, 4, 8, 8), torch.full((2, 3, 64, 64), -1.5), "black_or_flat"),  # black after clamping
        (torch.randn(2, 4, 8, 8), torch.zeros(2, 3, 64, 64), "black_or_flat"),  # flat grey
    ],
)
def test_output_check_flags_nan_zero_and_black(latents: Any, images: Any, failure: str | None) -> None:
    pipe = _pipe_like()
    check = gpu_check.OutputCheck(pipe)
    pipe.unet(latents)  # outside `watching()`: another row's call on shared modules, not counted
    with check.watching():
        pipe.unet(latents)
        pipe.vae.post_quant_conv(latents)
        pipe.vae.decoder(images)
    counts = check.close()
    assert counts["images_checked"] == 2
    assert gpu_check.passes(0, counts) == (failure is None)
    if failure is not None:
        assert counts[failure] >= 2, counts
    else:
        assert not gpu_check.passes(1, counts)  # a recompile after warm-up fails the row too


def test_compile_count_sees_a_recompile() -> None:
    fn = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    fn(torch.ones(3))
    before = gpu_check.compile_count()
    fn(torch.ones(3))
    assert gpu_check.compile_count() == before  # the same shape: cached
    fn(torch.ones(5))
    assert gpu_check.compile_count() > before  # a new shape: compiled again
