"""optimize=: "default" stays within a stated tolerance of "none"; warm-up means no recompilation later."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations
from fastdiff.optimize import cpu_has_native_bf16

PROMPT = "a watercolor fox in the snow"
# Bound for "default" vs "none" on the same weights: bf16 keeps 8 mantissa bits, so one UNet step perturbs the
# latents by ~0.4 %; through the VAE that is a few 1/255 steps on most pixels. 30 dB PSNR (RMS error ≈ 8/255)
# allows that and still fails on any real defect (a wrong scheduler, dtype mix-up or broken fusion gives < 15 dB).
MIN_PSNR_DB = 30.0


def psnr(a: Any, b: Any) -> float:
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_bf16_opt_in_follows_the_cpu(load: Any, hub_cache: Path, small_sizes: None) -> None:
    opts = Optimizations.preset("default", compute_dtype="auto")
    gen = FewStepGenerator.from_preset(
        "sd-turbo", device="cpu", cache_dir=hub_cache, local_files_only=True, optimize=opts
    )
    assert gen.dtype == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    exact = load("sd-turbo")(PROMPT, seed=0, height=128, width=128).images[0]
    assert psnr(gen(PROMPT, seed=0, height=128, width=128).images[0], exact) >= 20.0  # bf16: a looser bound


@pytest.mark.parametrize("name", ["sd-turbo", "sdxl-turbo", "lcm-lora-sd15", "sdxl-lightning-4step-lora"])
def test_default_is_within_tolerance_of_none(name: str, hub_cache: Path, load: Any, small_sizes: None) -> None:
    exact = load(name)
    fast = FewStepGenerator.from_preset(
        name, device="cpu", cache_dir=hub_cache, local_files_only=True, optimize="default"
    )
    assert fast.dtype == torch.float32  # bf16 on the CPU is opt-in: measured slower here (docs/performance.md)
    for seed in (0, 1):
        a = exact(PROMPT, seed=seed, height=128, width=128).images[0]
        b = fast(PROMPT, seed=seed, height=128, width=128).images[0]
        assert psnr(a, b) >= MIN_PSNR_DB, f"{name}: default drifted from none (seed {seed})"


def test_embedding_cache_hits(load: Any, small_sizes: None) -> None:
    gen = load("sdxl-turbo")
    gen.embedding_cache.clear()
    hits, misses = gen.embedding_cache.hits, gen.embedding_cache.misses
    first = gen(PROMPT, seed=3, height=64, width=64)
    again = gen(PROMPT, seed=3, height=64, width=64)
    assert (gen.embedding_cache.hits - hits, gen.embedding_cache.misses - misses) == (1, 1)
    assert again.timings["encode"] < first.timings["encode"]
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))


def test_warmup_then_no_recompilation(load: Any, small_sizes: None) -> None:
    import torch._dynamo

    base = load("sd-turbo").pipeline
    opts = Optimizations.preset("none", compile=True, compile_backend="eager")
    gen = FewStepGenerator.from_pipeline("sd-turbo", base, optimize=opts)
    torch._dynamo.reset()
    seconds = gen.warmup(height=64, width=64)
    assert seconds > 0
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    with torch._dynamo.config.patch(error_on_recompile=True), warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*torch.compile", category=FastDiffWarning)  # warmed: no warning
        gen("another prompt", seed=5, height=64, width=64)
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames
    with pytest.warns(FastDiffWarning, match="torch.compile compiles for this shape"):
        gen("another prompt", seed=5, height=64, width=128)


def test_max_uses_the_tiny_autoencoder(load: Any, small_sizes: None) -> None:
    from diffusers import AutoencoderTiny

    tiny = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8))
    opts = Optimizations.preset("max", tiny_vae=tiny, compute_dtype=torch.float32)
    gen = FewStepGenerator.from_pipeline("sdxl-turbo", load("sdxl-turbo").pipeline, optimize=opts)
    assert isinstance(gen.pipeline.vae, AutoencoderTiny)
    result = gen(PROMPT, seed=0, height=128, width=128)
    assert result.images[0].size == (128, 128)
    assert np.asarray(result.images[0]).std() > 0


def test_from_pipeline_default_leaves_the_users_pipeline_usable(load: Any, small_sizes: None) -> None:
    user = load("sd-turbo").pipeline
    gen = FewStepGenerator.from_pipeline("sd-turbo", user, optimize="default")
    assert gen.dtype == user.unet.dtype  # from_pipeline never changes the dtype of the user's modules
    image = user("a cat", num_inference_steps=1, guidance_scale=0.0, height=64, width=64).images[0]
    assert np.asarray(image).std() > 0


@pytest.mark.parametrize(
    ("optimize", "hint"),
    [("fastest", "choose one of: default, max, none"), ("defualt", "did you mean 'default'"), (3, "optimize must be")],
)
def test_bad_optimize(optimize: Any, hint: str) -> None:
    with pytest.raises(FastDiffError) as info:
        FewStepGenerator.from_preset("sdxl-turbo", optimize=optimize)
    assert hint in str(info.value)


def test_unknown_optimization_field() -> None:
    with pytest.raises(FastDiffError, match="fields of fastdiff.Optimizations"):
        Optimizations.preset("default", turbo_mode=True)
