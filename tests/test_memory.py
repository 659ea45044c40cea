"""Memory: a pipeline that cannot fit the device is refused before any weights are read, with the fixes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import AutoPipelineForText2Image
from safetensors.torch import save_file

import fastdiff.loading
from fastdiff import FastDiffError, FewStepGenerator
from fastdiff.memory import check_fits, pipeline_files, weights_bytes
from fastdiff.testing import cached_repo_path, make_hf_cache

GIB = 2**30
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def sd_turbo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("hf-cache")
    make_hf_cache(cache, ["sd-turbo"])
    return cache


def test_what_fits_with_the_margin_is_not_refused() -> None:
    assert check_fits(what="m", needed=9 * GIB, available=10 * GIB, device=CPU, dtype=torch.float32) is None
    assert check_fits(what="m", needed=99 * GIB, available=None, device=CPU, dtype=torch.float32) is None


def test_refusal_names_the_estimate_and_the_fixes_of_the_device() -> None:
    cpu = check_fits(what="flux-schnell", needed=48 * GIB, available=24 * GIB, device=CPU, dtype=torch.float32)
    assert cpu is not None
    assert "48.0 GiB in float32" in str(cpu) and "24.0 GiB free" in str(cpu)
    assert "dtype='bfloat16' (half: 24.0 GiB)" in str(cpu) and "another device" in str(cpu)
    assert "offload" not in str(cpu)  # model offload moves modules between the CPU and a GPU
    gpu = check_fits(what="flux-schnell", needed=24 * GIB, available=16 * GIB, device=CUDA, dtype=torch.bfloat16)
    assert gpu is not None
    assert "enable_model_cpu_offload" in str(gpu) and "from_pipeline" in str(gpu) and "another device" in str(gpu)
    assert "dtype=" not in str(gpu)  # already half precision: nothing to halve


def test_estimate_scales_the_stored_dtype_to_the_load_dtype(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(10, 20, dtype=torch.float16), "ids": torch.arange(7)}, str(path))
    assert weights_bytes([path], dtype=torch.float32) == 10 * 20 * 4
    assert weights_bytes([path], dtype=torch.bfloat16) == 10 * 20 * 2


def test_estimate_of_a_cached_pipeline_is_what_it_loads(sd_turbo_cache: Path) -> None:
    folder = cached_repo_path(sd_turbo_cache, "stabilityai/sd-turbo")
    fp16 = pipeline_files(folder, variant="fp16")
    assert fp16 and all(".fp16." in f.name for f in fp16)
    files = pipeline_files(folder, variant=None)
    assert files and not any(".fp16." in f.name for f in files)
    pipe = AutoPipelineForText2Image.from_pretrained(str(folder), dtype=torch.float32)
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    loaded = sum(t.numel() * 4 for m in modules for t in m.state_dict().values() if t.is_floating_point())
    assert weights_bytes(files, dtype=torch.float32) == loaded


def test_from_preset_refuses_before_reading_any_weights(sd_turbo_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("weights were read")

    monkeypatch.setattr(fastdiff.loading, "available_memory", lambda device: 1024)
    monkeypatch.setattr(AutoPipelineForText2Image, "from_pretrained", never)
    with pytest.raises(FastDiffError, match="sd-turbo: its weights need about .* GiB in float32") as info:
        FewStepGenerator.from_preset("sd-turbo", device="cpu", cache_dir=sd_turbo_cache, local_files_only=True)
    assert "dtype='bfloat16'" in str(info.value) and "another device" in str(info.value)


def test_an_unreadable_file_is_left_to_the_loader_to_name(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors")
    assert weights_bytes([broken], dtype=torch.float32) == 0
